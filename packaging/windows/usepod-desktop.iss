; Inno Setup 6 script: the Windows installer of usepod-desktop (per-user, no admin rights).
;
; Build the bundle first (python packaging\build.py), then, from the repository root:
;   "%ProgramFiles(x86)%\Inno Setup 6\ISCC.exe" /DAppVersion=0.1.0 ^
;       /DSourceDir=%CD%\packaging\dist\usepod-desktop /DOutputDir=%CD%\out ^
;       packaging\windows\usepod-desktop.iss
; -> out\usepod-desktop-0.1.0-windows-x64-setup.exe
;
; What it does (packaging/README.md has the why):
; - installs into %LOCALAPPDATA%\Programs\Use Pod Desktop for the current user only
;   (PrivilegesRequired=lowest: no UAC prompt; the app's data never needs admin rights);
; - a Start menu entry (and, if ticked, a desktop icon);
; - the optional task "Start Use Pod Desktop when I sign in": runs the app's own
;   `usepod-desktop-cli.exe autostart on`, which writes the HKCU Run value the app's settings
;   show and change later (one owner for the entry);
; - the uninstaller closes the app, always removes the start-at-login value, asks (default No)
;   before removing the keyring items (`usepod-desktop-cli.exe forget`), and asks separately
;   (default No) before deleting the identity key (`forget --identity --yes --keep-keyring`),
;   saying that a new
;   identity means enrolling the machine again. agent.toml, the ledger and the logs stay.
;
; Signing: pass /DSignToolName=usepodsign together with ISCC's /Susepodsign=... (see
; packaging/README.md) to sign the uninstaller too; the release workflow signs the programs and
; the finished setup with packaging\windows\sign.ps1.

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef SourceDir
  #define SourceDir "..\dist\usepod-desktop"
#endif
#ifndef OutputDir
  #define OutputDir "..\dist"
#endif
#ifndef IconFile
  #define IconFile "..\build\icons\usepod-desktop.ico"
#endif

#define AppName "Use Pod Desktop"
#define AppExe "usepod-desktop.exe"
#define CliExe "usepod-desktop-cli.exe"
#define RunKey "Software\Microsoft\Windows\CurrentVersion\Run"
#define RunValue "UsePodDesktop"

[Setup]
; Never change AppId: it is how a new version finds and replaces the old one.
AppId={{17B696B1-629F-46ED-868A-606916202245}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=Use Pod
AppPublisherURL=https://usepod.ai
AppSupportURL=https://usepod.ai
VersionInfoVersion={#AppVersion}
VersionInfoProductName={#AppName}
VersionInfoDescription={#AppName} setup
PrivilegesRequired=lowest
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputDir={#OutputDir}
OutputBaseFilename=usepod-desktop-{#AppVersion}-windows-x64-setup
SetupIconFile={#IconFile}
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName}
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
; A running copy (tray app or `run`) holds its files: close it through the Restart Manager.
CloseApplications=yes
RestartApplications=no
#ifdef SignToolName
SignTool={#SignToolName}
SignedUninstaller=yes
#endif

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "startatlogin"; Description: "Start {#AppName} when I sign in"; GroupDescription: "Options:"; Flags: unchecked
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\{#AppExe}"; Comment: "Serve AI inference from your own backends on the Use Pod marketplace"
Name: "{group}\Uninstall {#AppName}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#CliExe}"; Parameters: "autostart on"; Flags: runhidden waituntilterminated; Tasks: startatlogin; StatusMsg: "Turning on start at sign-in..."
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[UninstallRun]
; The tray app and a console `run` hold their files open: end them before the files go.
Filename: "{sys}\taskkill.exe"; Parameters: "/IM {#AppExe} /T /F"; Flags: runhidden; RunOnceId: "StopApp"
Filename: "{sys}\taskkill.exe"; Parameters: "/IM {#CliExe} /T /F"; Flags: runhidden; RunOnceId: "StopCli"

[Code]
function RunCli(const Params: String): Integer;
var
  Code: Integer;
begin
  if not Exec(ExpandConstant('{app}\{#CliExe}'), Params, '', SW_HIDE, ewWaitUntilTerminated, Code) then
    Code := -1;
  Log(Format('usepod-desktop-cli %s -> exit %d', [Params, Code]));
  Result := Code;
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep <> usUninstall then
    exit;
  { Start at login would point at a program that is about to be deleted: it always goes. }
  RunCli('autostart off');
  RegDeleteValue(HKEY_CURRENT_USER, '{#RunKey}', '{#RunValue}');
  { The keyring items are shared with the reference usepod-agent: ask, default No. }
  if SuppressibleMsgBox(
       'Also remove the API keys and the host token that {#AppName} saved in ' +
       'Windows Credential Manager?' + #13#10#13#10 +
       'Keep them if you will install {#AppName} again or use the usepod-agent ' +
       'command-line agent on this computer.',
       mbConfirmation, MB_YESNO or MB_DEFBUTTON2, IDNO) = IDYES then
    RunCli('forget');
  { The identity is the provider: deleting it means enrolling this computer again. }
  if SuppressibleMsgBox(
       'Also delete this computer''s provider identity key (%USERPROFILE%\.usepod-agent\identity.key)?' +
       #13#10#13#10 +
       'The marketplace knows this computer by that key. A new identity is a new provider: ' +
       'you would have to enroll (pair) this computer again, and the earnings of the old ' +
       'provider stay with the old key. Choose No unless you are sure.',
       mbConfirmation, MB_YESNO or MB_DEFBUTTON2, IDNO) = IDYES then
    RunCli('forget --identity --yes --keep-keyring');
end;
