"""The Pricing tab: default prices, a price per model, what the provider keeps and the margin
over a remote backend's upstream cost, and `[model_aliases]` (offer a model under another id).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core.config import (
    REMOTE_KINDS,
    ConfigProblem,
    ModelPrice,
    PricingConfig,
    quote_key,
)
from usepod_desktop.core.money import (
    SHARE_PERCENT,
    SHARE_TEXT,
    PriceError,
    format_rate,
    parse_usd_per_1m,
    provider_share_of,
    resolve_price,
)
from usepod_desktop.gui.settings.backend_dialogs import KIND_LABELS
from usepod_desktop.gui.settings.tab import FieldMap, Loaded, mark, note
from usepod_desktop.gui.widgets import (
    ERROR_COLOUR,
    elide_middle,
    error_label,
    mark_invalid,
    set_error,
)

if TYPE_CHECKING:
    from usepod_desktop.gui.settings.window import SettingsWindow

DEFAULTS = ("pricing.default_input_per_1m", "pricing.default_output_per_1m")


def price_path(model_id: str, side: int) -> str:
    """The field path of a model's input (0) or output (1) price."""
    key = "input_per_1m" if side == 0 else "output_per_1m"
    return f"pricing.models.{quote_key(model_id)}.{key}"


@dataclass(slots=True)
class ModelRow:
    model_id: str
    backend: str  # kind, or "" when not discovered
    upstream: Any = None  # UpstreamPrice (Decimal micro-USD per 1M) or None
    below_cost: bool = False
    entry: tuple[str, str | None] | None = None  # identity of the entry that serves it


class PricingTab(QWidget):
    COLUMNS = (
        "Model",
        "Backend",
        "Input $/1M",
        "Output $/1M",
        f"You keep ({SHARE_PERCENT})",
        "Upstream cost",
        "Margin",
    )

    name = "pricing"
    title = "Pricing"

    def __init__(self, window: SettingsWindow, fields: FieldMap) -> None:
        super().__init__(window)
        self.window_ = window
        self.fields = fields
        self.rows: list[ModelRow] = []
        #: model id -> [input text, output text] typed in the table (the draft overrides)
        self.texts: dict[str, list[str]] = {}
        self.row_edits: dict[str, tuple[QLineEdit, QLineEdit]] = {}
        self.advertised: dict[str, Any] = {}

        layout = QVBoxLayout(self)
        defaults = QGroupBox("Default prices (what users pay, dollars per million tokens)", self)
        grid = QGridLayout(defaults)
        self.default_in = QLineEdit(defaults)
        self.default_in.setObjectName("defaultInput")
        self.default_out = QLineEdit(defaults)
        self.default_out.setObjectName("defaultOutput")
        self.default_in_error = error_label(defaults)
        self.default_out_error = error_label(defaults)
        for edit in (self.default_in, self.default_out):
            edit.setMaximumWidth(140)
        grid.addWidget(QLabel("Input  $", defaults), 0, 0)
        grid.addWidget(self.default_in, 0, 1)
        grid.addWidget(QLabel("Output  $", defaults), 0, 2)
        grid.addWidget(self.default_out, 0, 3)
        grid.setColumnStretch(4, 1)
        grid.addWidget(self.default_in_error, 1, 0, 1, 5)
        grid.addWidget(self.default_out_error, 2, 0, 1, 5)
        self.keep_label = QLabel(defaults)
        grid.addWidget(self.keep_label, 3, 0, 1, 5)
        layout.addWidget(defaults)

        self.table = QTableWidget(0, len(self.COLUMNS), self)
        self.table.setObjectName("pricingTable")
        # long ids (org/model-name-…-GGUF, local paths) keep both ends; the tooltip has it all
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(self.COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        for col in (2, 3):  # room for "0.50 (default)" typed or as a placeholder
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Fixed)
            header.resizeSection(col, 130)
        layout.addWidget(self.table, 1)
        add_row = QHBoxLayout()
        self.new_model = QLineEdit(self)
        self.new_model.setObjectName("newPriceModel")
        self.new_model.setPlaceholderText("model id, e.g. meta-llama/Llama-3.3-70B-Instruct")
        self.add_model = QPushButton("Add a price for this model", self)
        self.add_model.clicked.connect(self._add_model)
        add_row.addWidget(self.new_model, 1)
        add_row.addWidget(self.add_model)
        layout.addLayout(add_row)
        # [model_aliases]: offer a model under another id (a llama.cpp file path, say)
        alias_row = QHBoxLayout()
        alias_row.addWidget(QLabel("Offer", self))
        self.alias_source = QComboBox(self)
        self.alias_source.setObjectName("aliasSource")
        self.alias_source.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.alias_source.setMinimumContentsLength(24)
        self.alias_source.currentIndexChanged.connect(self._alias_source_changed)
        alias_row.addWidget(self.alias_source, 1)
        alias_row.addWidget(QLabel("as", self))
        self.alias_edit = QLineEdit(self)
        self.alias_edit.setObjectName("aliasId")
        self.alias_edit.setPlaceholderText("the model id users see (empty: the backend's own)")
        alias_row.addWidget(self.alias_edit, 1)
        self.alias_set = QPushButton("Set", self)
        self.alias_set.setObjectName("aliasSet")
        self.alias_set.clicked.connect(self._set_alias)
        alias_row.addWidget(self.alias_set)
        layout.addLayout(alias_row)
        #: The draft `[model_aliases]`: a backend's own model id -> the id to advertise.
        self.aliases: dict[str, str] = {}
        self.backend_ids: list[str] = []
        self.problems = error_label(self)
        self.problems.setObjectName("pricingProblems")
        layout.addWidget(self.problems)
        layout.addWidget(
            note(
                "Empty cells use the defaults; for OpenRouter / Venice models without a price of "
                f"their own, the upstream cost ÷ {SHARE_TEXT} × (1 + markup), so your share "
                f"covers it. Users pay the listed price; you receive {SHARE_PERCENT} (figures "
                "are estimates: the coordinator bills from its own token count). A negative "
                "margin, in red, means you would pay more upstream than you earn.",
                self,
            )
        )
        for edit in (self.default_in, self.default_out):
            edit.textChanged.connect(self._defaults_edited)
        fields.register(DEFAULTS[0], self.name, self.default_in, self.default_in_error)
        fields.register(DEFAULTS[1], self.name, self.default_out, self.default_out_error)
        fields.register("pricing", self.name, None, self.problems)
        fields.register("model_aliases", self.name, self.alias_edit, self.problems, name="Alias")

    # ---- loading

    def load(self, loaded: Loaded) -> None:
        config = loaded.config
        self.aliases = dict(config.model_aliases)
        self.default_in.setText(_field(config.pricing.default_input_per_1m))
        self.default_out.setText(_field(config.pricing.default_output_per_1m))
        self.texts = {
            model_id: [_field(p.input_per_1m), _field(p.output_per_1m)]
            for model_id, p in config.pricing.models.items()
        }
        for edit, label in (
            (self.default_in, self.default_in_error),
            (self.default_out, self.default_out_error),
        ):
            mark(edit, label, None)
        set_error(self.problems, None)
        self.rows = []  # rebuild the cells: their texts come from the loaded config
        self.set_discovery(loaded.view)

    def set_discovery(self, discovery: Any) -> None:
        self.advertised = {m.model_id: m for m in getattr(discovery, "models", []) or []}
        found = [mid for r in getattr(discovery, "reports", []) or [] for mid in r.models_found]
        self.backend_ids = sorted(set(found) | set(self.aliases))
        self._fill_alias_sources()
        self.refresh_rows()

    def _fill_alias_sources(self) -> None:
        from usepod_desktop.core.discovery import looks_like_a_path

        current = self.alias_source.currentData()
        self.alias_source.blockSignals(True)
        self.alias_source.clear()
        # file paths first: they are what needs a name
        for mid in sorted(self.backend_ids, key=lambda m: (not looks_like_a_path(m), m)):
            shown = elide_middle(mid, 60)
            if mid in self.aliases:
                shown += f"  (offered as {self.aliases[mid]})"
            self.alias_source.addItem(shown, mid)
            self.alias_source.setItemData(
                self.alias_source.count() - 1, mid, Qt.ItemDataRole.ToolTipRole
            )
        unnamed = [m for m in self.backend_ids if looks_like_a_path(m) and m not in self.aliases]
        if unnamed and current not in unnamed and current not in self.aliases:
            current = min(unnamed)  # what needs a name comes up by itself
        index = self.alias_source.findData(current)
        self.alias_source.setCurrentIndex(max(index, 0))
        self.alias_source.blockSignals(False)
        self._alias_source_changed()

    def _alias_source_changed(self, *_args: object) -> None:
        source = self.alias_source.currentData()
        self.alias_edit.setText(self.aliases.get(source, "") if source else "")

    def set_alias(self, backend_id: str, advertised: str) -> None:
        """Offer `backend_id` as `advertised` (empty: under its own id); applied with Apply."""
        advertised = advertised.strip()
        if advertised and advertised != backend_id:
            self.aliases[backend_id] = advertised
        else:
            self.aliases.pop(backend_id, None)
        self.window_.mark_dirty()
        self._fill_alias_sources()

    def _set_alias(self) -> None:
        source = self.alias_source.currentData()
        if source:
            self.set_alias(source, self.alias_edit.text())

    def refresh_rows(self) -> None:
        """Rows: every advertised model, plus every model with a price of its own."""
        rows: dict[str, ModelRow] = {}
        for model_id, model in self.advertised.items():
            served_by = getattr(getattr(model, "backend_ref", None), "config", None)
            rows[model_id] = ModelRow(
                model_id,
                model.backend,
                model.upstream,
                model.below_cost,
                getattr(served_by, "identity", None),
            )
        for model_id in self.texts:
            rows.setdefault(model_id, ModelRow(model_id, ""))
        ordered = sorted(rows.values(), key=lambda r: r.model_id)
        if [r.model_id for r in ordered] == [r.model_id for r in self.rows]:
            self.rows = ordered
            self.recompute()
            return
        self.rows = ordered
        self.row_edits = {}
        self.fields.forget("pricing.models.")
        self.table.setRowCount(len(ordered))
        for i, row in enumerate(ordered):
            item = QTableWidgetItem(row.model_id)
            item.setToolTip(row.model_id)
            self.table.setItem(i, 0, item)
            backend = (
                KIND_LABELS.get(row.backend, row.backend).split(" (")[0]
                if row.backend
                else "not offered now"
            )
            self.table.setItem(i, 1, QTableWidgetItem(backend))
            texts = self.texts.get(row.model_id, ["", ""])
            edits = []
            for col, text in ((2, texts[0]), (3, texts[1])):
                edit = QLineEdit(self.table)
                edit.setFrame(False)
                edit.setText(text)
                edit.setObjectName(f"price:{row.model_id}:{'in' if col == 2 else 'out'}")
                edit.textEdited.connect(
                    lambda value, m=row.model_id, c=col - 2: self._cell_edited(m, c, value)
                )
                self.table.setCellWidget(i, col, edit)
                edits.append(edit)
                side = col - 2
                self.fields.register(
                    price_path(row.model_id, side),
                    self.name,
                    edit,
                    self.problems,
                    name=f"{row.model_id} {'input' if side == 0 else 'output'}",
                )
            self.row_edits[row.model_id] = (edits[0], edits[1])
            for col in (4, 5, 6):
                self.table.setItem(i, col, QTableWidgetItem(""))
        self.recompute()

    def _add_model(self) -> None:
        model_id = self.new_model.text().strip()
        if not model_id:
            return
        if model_id not in self.texts:
            self.texts[model_id] = ["", ""]
        self.new_model.clear()
        self.refresh_rows()
        edits = self.row_edits.get(model_id)
        if edits is not None:
            edits[0].setFocus()

    def _cell_edited(self, model_id: str, column: int, value: str) -> None:
        self.texts.setdefault(model_id, ["", ""])[column] = value
        self.window_.mark_dirty()
        self.recompute()
        self.check_as_typed()

    def _defaults_edited(self) -> None:
        self.window_.mark_dirty()
        self.recompute()
        self.check_as_typed()

    def check_as_typed(self) -> None:
        """Mark each price that cannot be stored while it is typed (Apply still checks the
        rest, e.g. a row with only one of its two prices)."""
        problems: list[str] = []
        for edit, label, name in (
            (self.default_in, self.default_in_error, "Default input"),
            (self.default_out, self.default_out_error, "Default output"),
        ):
            try:
                parse_usd_per_1m(edit.text())
                mark(edit, label, None)
            except PriceError as exc:
                mark(edit, label, str(exc))
                problems.append(f"{name} price: {exc}")
        for model_id, (edit_in, edit_out) in self.row_edits.items():
            for side, widget in (("input", edit_in), ("output", edit_out)):
                text = widget.text()
                try:
                    if text.strip():
                        parse_usd_per_1m(text)
                    mark_invalid(widget, None)
                except PriceError as exc:
                    mark_invalid(widget, str(exc))
                    problems.append(f"{model_id} {side}: {exc}")
        set_error(self.problems, "\n".join(problems) or None)

    def set_price(self, model_id: str, input_text: str, output_text: str) -> None:
        """Type a price into a model's row (adding the row when needed), as a user would."""
        if model_id not in self.row_edits:
            self.texts.setdefault(model_id, ["", ""])
            self.refresh_rows()
        edit_in, edit_out = self.row_edits[model_id]
        for column, (edit, text) in enumerate(((edit_in, input_text), (edit_out, output_text))):
            edit.setText(text)
            self._cell_edited(model_id, column, text)

    # ---- the computed columns

    def _draft_defaults(self) -> tuple[int | None, int | None]:
        out: list[int | None] = []
        for edit in (self.default_in, self.default_out):
            try:
                out.append(parse_usd_per_1m(edit.text()))
            except PriceError:
                out.append(None)
        return out[0], out[1]

    def _markup_for(self, row: ModelRow) -> float | None:
        """The draft markup of the entry serving `row` (else the first entry of its kind)."""
        entries = self.window_.backends_tab.entries
        for entry in entries:
            if row.entry is not None and entry.identity == row.entry:
                return entry.markup
        for entry in entries:
            if entry.kind == row.backend:
                return entry.markup
        return None

    def effective(self, row: ModelRow) -> tuple[int | None, int | None, str]:
        """(input, output, where it comes from) of the price users would pay for `row`, by the
        core's rule (`core/money.py` `resolve_price`) applied to the draft."""
        texts = self.texts.get(row.model_id, ["", ""])
        explicit: dict[str, ModelPrice] = {}
        if texts[0].strip() or texts[1].strip():
            try:
                explicit[row.model_id] = ModelPrice(
                    parse_usd_per_1m(texts[0]), parse_usd_per_1m(texts[1])
                )
            except PriceError:
                return None, None, "invalid"
        remote = row.backend in REMOTE_KINDS
        d_in, d_out = self._draft_defaults()
        if not explicit and not remote and (d_in is None or d_out is None):
            return d_in, d_out, "default"  # a default being typed is not a price yet
        draft = PricingConfig(d_in or 0, d_out or 0, explicit)
        choice = resolve_price(
            row.model_id, row.upstream, draft, remote=remote, markup=self._markup_for(row)
        )
        if choice.price is None:
            return None, None, f"not offered: {choice.reason}"
        source = {"explicit": "your price", "default": "default"}.get(choice.source or "")
        return choice.price.input_per_1m, choice.price.output_per_1m, source or "upstream"

    def recompute(self) -> None:
        d_in, d_out = self._draft_defaults()
        if d_in is not None and d_out is not None:
            self.keep_label.setText(
                f"You keep {SHARE_PERCENT}: {format_rate(provider_share_of(d_in), places=6)} "
                f"input / {format_rate(provider_share_of(d_out), places=6)} "
                "output per million tokens."
            )
        else:
            self.keep_label.setText("")
        for i, row in enumerate(self.rows):
            p_in, p_out, source = self.effective(row)
            edits = self.row_edits.get(row.model_id)
            if edits is not None:
                for edit, value in zip(edits, (p_in, p_out), strict=True):
                    hint = "" if value is None else f"{_field(value)} ({source})"
                    edit.setPlaceholderText(hint if source != "your price" else "")
            keep = margin = upstream = ""
            negative = False
            if p_in is not None and p_out is not None:
                k_in, k_out = provider_share_of(p_in), provider_share_of(p_out)
                keep = f"{_shown(k_in)} / {_shown(k_out)}"
                if row.upstream is not None:
                    m_in = k_in - row.upstream.input_per_1m
                    m_out = k_out - row.upstream.output_per_1m
                    negative = m_in < 0 or m_out < 0
                    margin = f"{_signed(m_in)} / {_signed(m_out)}"
            elif source.startswith("not offered"):
                keep = source
            if row.upstream is not None:
                upstream = (
                    f"{_shown(row.upstream.input_per_1m)} / {_shown(row.upstream.output_per_1m)}"
                )
            for col, text in ((4, keep), (5, upstream), (6, margin)):
                item = self.table.item(i, col)
                if item is None:
                    continue
                item.setText(text)
                if col == 6:
                    item.setForeground(
                        QColor(ERROR_COLOUR) if negative else self.table.palette().text().color()
                    )
                    item.setToolTip(
                        "Below cost: you would earn less than you pay upstream" if negative else ""
                    )

    # ---- validation

    def collect(self, draft: dict[str, Any]) -> list[ConfigProblem]:
        """Prices as typed -> `[pricing]`, the aliases -> `[model_aliases]`. A price that is
        not a number (or an empty cell next to a typed one) is a problem here; the values'
        rules (above zero, the ceiling) are the core's."""
        found: list[ConfigProblem] = []
        pricing: dict[str, Any] = {}
        for path, edit in zip(DEFAULTS, (self.default_in, self.default_out), strict=True):
            try:
                pricing[path.removeprefix("pricing.")] = parse_usd_per_1m(edit.text())
            except PriceError as exc:
                found.append(ConfigProblem(path, f"{path}: {exc}"))
        models: dict[str, dict[str, int]] = {}
        for model_id, texts in sorted(self.texts.items()):
            if not texts[0].strip() and not texts[1].strip():
                continue
            entry: dict[str, int] = {}
            for side, text in enumerate(texts):
                path = price_path(model_id, side)
                try:
                    if not text.strip():
                        raise PriceError("enter both prices, or clear both to use the defaults")
                    entry[path.rsplit(".", 1)[1]] = parse_usd_per_1m(text)
                except PriceError as exc:
                    found.append(ConfigProblem(path, f"{path}: {exc}"))
            models[model_id] = entry
        if models:
            pricing["models"] = models
        draft["pricing"] = pricing
        if self.aliases:
            draft["model_aliases"] = dict(self.aliases)
        else:
            draft.pop("model_aliases", None)
        return found


def _field(micro: int) -> str:
    """A price as typed in a price field (`0.50`)."""
    return format_rate(micro, dollar=False)


def _shown(micro: Decimal) -> str:
    """A figure in the $/1M columns, to the micro-dollar (`0.123457`)."""
    return format_rate(micro, dollar=False, places=6)


def _signed(micro: Decimal) -> str:
    text = _shown(abs(micro))
    return f"−{text}" if micro < 0 else f"+{text}"
