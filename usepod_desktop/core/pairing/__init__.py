"""Device-flow pairing (docs/protocol.md, "Pairing requests"): the code shown big, approved on
the website. :class:`PairingFlow` (``flow.py``) drives it for the `setup` command and the GUI
wizard; its values and events are in ``values.py``, the pairing server's URLs and answers in
``wire.py``, the agent.toml it writes in ``paired_config.py``.

The names below are the flow's public face, re-exported for callers that import the package;
product modules import from the submodule that defines a name.
"""

from usepod_desktop.core.pairing.flow import PairingFlow
from usepod_desktop.core.pairing.values import (
    HOST_TOKEN_KEY,
    ActivatedModel,
    Activation,
    BackendsDetected,
    CodeExpired,
    CodeIssued,
    CoordinatorUnreachable,
    IdentityReady,
    PairCode,
    Paired,
    PairingCancelled,
    PairingError,
    PairingEvent,
    PairingExpired,
    PairingResult,
    PollExpired,
    WaitingForApproval,
)
from usepod_desktop.core.pairing.wire import (
    MAX_ANSWER_BYTES,
    coordinator_ws_url,
    normalize_base,
    pair_page_url,
    parse_activation,
)

__all__ = [
    "HOST_TOKEN_KEY",
    "MAX_ANSWER_BYTES",
    "ActivatedModel",
    "Activation",
    "BackendsDetected",
    "CodeExpired",
    "CodeIssued",
    "CoordinatorUnreachable",
    "IdentityReady",
    "PairCode",
    "Paired",
    "PairingCancelled",
    "PairingError",
    "PairingEvent",
    "PairingExpired",
    "PairingFlow",
    "PairingResult",
    "PollExpired",
    "WaitingForApproval",
    "coordinator_ws_url",
    "normalize_base",
    "pair_page_url",
    "parse_activation",
]
