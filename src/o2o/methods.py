"""Named offline-to-online recipes: how the online agent starts, which bridge runs, which controller.

A method fixes the *structure* of a fine-tuning run (which pre-trained parts are copied, whether the
critics are re-aligned, which multiplier controller); its hyper-parameters stay ordinary config keys
(``o2o config --method M``) set by presets and ``--set``. ``o2o finetune --method M`` runs one.

Marvel family (``../shared/specs/marvel.md``; online algorithm SAC-Lag, safe tasks):

| method       | actor | critics           | VPA | lambda                                  |
|--------------|-------|-------------------|-----|-----------------------------------------|
| from-scratch | fresh | fresh             | -   | aPID                                    |
| warm-start   | pi0   | pre-trained       | -   | dual ascent, lambda0 = 0                |
| vpa-only     | pi0   | pre-trained + VPA | yes | dual ascent, lambda0 = 0                |
| vpa-init     | pi0   | pre-trained + VPA | yes | dual ascent, lambda0 per task preset    |
| apid-only    | pi0   | pre-trained       | -   | aPID                                    |
| vpa-pid      | pi0   | pre-trained + VPA | yes | PID (aPID's EMAs and lag, fixed gains)  |
| marvel       | pi0   | pre-trained + VPA | yes | aPID                                    |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from o2o.errors import ConfigError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    family: str  # "safe" (Marvel) | "ocr-cft"
    algo: str  # online algorithm
    init_actor: bool  # start from the pre-trained actor
    init_critics: bool  # start from the pre-trained critics (before any bridge)
    vpa: bool  # Marvel's value pre-alignment
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)  # config keys the method fixes (a preset layer)

    @property
    def needs_pretrained(self) -> bool:
        return self.init_actor or self.init_critics or self.vpa


_DUAL0 = {"lagrange.controller": "dual-ascent", "lagrange.init_lambda": 0.0}
_APID = {"lagrange.controller": "apid"}
_FINETUNE = {"online.warmup_steps": 0, "online.update_after": 0}  # the pre-trained policy acts from step 0

METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in [
        MethodSpec("from-scratch", "safe", "sac-lag", False, False, False, "SAC-Lag from a random init, aPID multiplier", dict(_APID)),
        MethodSpec("warm-start", "safe", "sac-lag", True, True, False, "pi0, Q, Qc fine-tuned directly; dual ascent from lambda 0", {**_DUAL0, **_FINETUNE}),
        MethodSpec("vpa-only", "safe", "sac-lag", True, True, True, "pi0 + VPA-aligned critics; dual ascent from lambda 0", {**_DUAL0, **_FINETUNE}),
        MethodSpec("vpa-init", "safe", "sac-lag", True, True, True, "pi0 + VPA; dual ascent from a tuned lambda0 (task preset)", {"lagrange.controller": "dual-ascent", **_FINETUNE}),
        MethodSpec("apid-only", "safe", "sac-lag", True, True, False, "pi0, Q, Qc fine-tuned with the aPID multiplier (no VPA)", {**_APID, **_FINETUNE}),
        MethodSpec(
            "vpa-pid", "safe", "sac-lag", True, True, True, "pi0 + VPA; PID with aPID's smoothing and fixed gains",
            {"lagrange.controller": "pid", "lagrange.ema_p": 0.9, "lagrange.ema_d": 0.9, "lagrange.d_delay": 10, **_FINETUNE},
        ),
        MethodSpec("marvel", "safe", "sac-lag", True, True, True, "Marvel: pi0 + VPA-aligned critics + aPID multiplier", {**_APID, **_FINETUNE}),
    ]
}


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}") from None


def register(spec: MethodSpec) -> None:
    """Add a method (other families register theirs on import)."""
    METHODS[spec.name] = spec
