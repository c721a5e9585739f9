<#
.SYNOPSIS
  Authenticode-sign files with signtool, the certificate coming from the environment.

.DESCRIPTION
  The signing hook of the Windows build (packaging/README.md, "Signing"):

    $env:WINDOWS_CERT_PFX_BASE64   the code-signing certificate (.pfx), base64-encoded
    $env:WINDOWS_CERT_PASSWORD     its password
    $env:WINDOWS_TIMESTAMP_URL     RFC 3161 time-stamp server (default DigiCert's)

  ./packaging/windows/sign.ps1 packaging/dist/usepod-desktop/usepod-desktop.exe ...

  Signs with SHA-256 and a time stamp (so the signature outlives the certificate), then
  verifies each file with `signtool verify /pa`. The .pfx is written to a temporary file that
  is deleted afterwards. Without WINDOWS_CERT_PFX_BASE64 it exits 1 without touching anything.
  For a certificate on a hardware token / cloud HSM (EV certificates), replace the /f and /p
  arguments by the provider's (/sha1 THUMBPRINT, /csp, /kc, or Azure Trusted Signing's dlib).
#>
param([Parameter(Mandatory = $true, ValueFromRemainingArguments = $true)][string[]] $Files)
$ErrorActionPreference = "Stop"

if (-not $env:WINDOWS_CERT_PFX_BASE64) {
  Write-Error "sign.ps1: WINDOWS_CERT_PFX_BASE64 is not set; nothing signed"
  exit 1
}
$timestamp = if ($env:WINDOWS_TIMESTAMP_URL) { $env:WINDOWS_TIMESTAMP_URL } else { "http://timestamp.digicert.com" }

# signtool comes with the Windows SDK; take the newest x64 one.
$signtool = Get-ChildItem "${env:ProgramFiles(x86)}\Windows Kits\10\bin\*\x64\signtool.exe" |
  Sort-Object FullName -Descending | Select-Object -First 1
if (-not $signtool) { Write-Error "sign.ps1: signtool.exe not found (install the Windows SDK)"; exit 1 }

$pfx = Join-Path ([IO.Path]::GetTempPath()) ("usepod-" + [guid]::NewGuid() + ".pfx")
try {
  [IO.File]::WriteAllBytes($pfx, [Convert]::FromBase64String($env:WINDOWS_CERT_PFX_BASE64))
  foreach ($file in $Files) {
    & $signtool.FullName sign /fd SHA256 /td SHA256 /tr $timestamp /f $pfx /p $env:WINDOWS_CERT_PASSWORD /d "Use Pod Desktop" $file
    if ($LASTEXITCODE -ne 0) { Write-Error "sign.ps1: signing $file failed"; exit 1 }
    & $signtool.FullName verify /pa /v $file | Out-Null
    if ($LASTEXITCODE -ne 0) { Write-Error "sign.ps1: $file does not verify"; exit 1 }
    Write-Host "signed $file"
  }
}
finally {
  Remove-Item -Force -ErrorAction SilentlyContinue $pfx
}
