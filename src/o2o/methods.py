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
| marvel-paper | pi0   | pre-trained + VPA | yes | aPID, the released rule and loss        |

``marvel`` is o2o's Marvel: the preset's balanced cost term and aPID with bounded gains
(``configs/finetune-safe.yaml``). ``marvel-paper`` is the authors' released rule: the raw loss
alpha log pi - Q + lambda Qc, the aPID updated on every minibatch with the same measurement
(K_p = K_i = K_d = 5e-6 on the raw cost error), the raw gain factors clipped to [K0/10, 10 K0],
no upper bound on lambda.
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
    # OCR-CFT's stages (family "ocr-cft"): policy re-evaluation, value alignment, constrained fine-tuning
    reeval: bool = False
    align: bool = False
    constraint: bool = False
    offline_algo: str | None = None  # the offline algorithm the method is defined from (the pipeline's default)

    @property
    def needs_pretrained(self) -> bool:
        return self.init_actor or self.init_critics or self.vpa or self.reeval


_DUAL0 = {"lagrange.controller": "dual-ascent", "lagrange.init_lambda": 0.0}
_APID = {"lagrange.controller": "apid"}
_FINETUNE = {"online.warmup_steps": 0, "online.update_after": 0}  # the pre-trained policy acts from step 0
_PAPER = {  # the released code's controller and actor loss (online/sac_lag.py, utils.PIDLagrangian)
    "lagrange.controller": "apid", "lagrange.cadence": "minibatch", "lagrange.kp": 5e-6, "lagrange.ki": 5e-6,
    "lagrange.kd": 5e-6, "lagrange.relative_error": False, "lagrange.gain_update": "raw", "lagrange.adapt_relative": "mean",
    "lagrange.gain_floor": None, "lagrange.gain_bound": 10.0, "lagrange.max_lambda": None, "lagrange.ema_p": None,
    "lagrange.limit_margin": 0.0, "lagrange.init_lambda": 0.0,
    "agent.cost_term": "raw", "agent.scale_actor_loss": False,
}

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
        MethodSpec("marvel-paper", "safe", "sac-lag", True, True, True, "Marvel with the released aPID rule and raw actor loss", {**_PAPER, **_FINETUNE}),
    ]
}


# OCR-CFT family (``../shared/specs/ocr_cft.md``; online SAC / TD3 / PPO, unconstrained tasks). The online
# algorithm is the constrained agent (o2sac, o2td3) where the method has the constraint, the plain one
# otherwise; PPO's constraint is the auxiliary advantage (``loops/ocr.py``). Any offline actor can be
# the starting point (``bridge/ocr.py`` clones it into another policy class); ``offline_algo`` is only
# the default of ``o2o ocr``.
#
# | method            | algo  | actor | critics          | re-eval | align | constraint | replay |
# |-------------------|-------|-------|------------------|---------|-------|------------|--------|
# | o2sac             | o2sac | pi_off| fresh            | yes     | yes   | KL         | half   |
# | o2sac-no-reeval   | o2sac | pi_off| offline (CQL)    | -       | yes   | KL         | half   |
# | o2sac-no-align    | o2sac | pi_off| fresh            | yes     | -     | KL         | half   |
# | o2sac-no-cft      | sac   | pi_off| fresh            | yes     | yes   | -          | half   |
# | o2sac-naive       | sac   | pi_off| offline (CQL)    | -       | -     | -          | none   |
# | o2sac-scratch     | sac   | fresh | fresh            | -       | -     | -          | none   |
# (the same six for o2td3 from TD3+BC; o2ppo from IQL has no alignment stage of its own)
_NO_REPLAY = {"ocr.replay": "none"}


def _ocr_methods(name: str, algo: str, plain: str, offline: str, f: str) -> list[MethodSpec]:
    scratch = {"sac": {"online.warmup_steps": 5000, "online.update_after": 5000},
               "td3": {"online.warmup_steps": 25000, "online.update_after": 25000, "agent.actor_lr": 3e-4}, "ppo": {}}[plain]
    has_align = plain != "ppo"
    # PPO from an offline start keeps the offline data's observation statistics (as released)
    frozen = {"agent.freeze_observation_stats": True} if plain == "ppo" else {}
    M = MethodSpec
    out = [
        M(name, "ocr-cft", algo, True, False, False, f"{name.upper()}: re-evaluation + alignment + {f} constraint (from {offline})",
          dict(frozen), reeval=True, align=has_align, constraint=True, offline_algo=offline),
        M(f"{name}-no-reeval", "ocr-cft", algo, True, True, False, f"{name} without re-evaluation (the offline critic is aligned)",
          dict(frozen), reeval=False, align=has_align, constraint=True, offline_algo=offline),
        M(f"{name}-no-cft", "ocr-cft", plain, True, False, False, f"{name} without the constraint (plain {plain} online)",
          dict(frozen), reeval=True, align=has_align, constraint=False, offline_algo=offline),
        M(f"{name}-naive", "ocr-cft", plain, True, True, False, f"naive fine-tuning: the offline actor and critic continued by {plain}",
          {**_NO_REPLAY, **frozen}, offline_algo=offline),
        M(f"{name}-scratch", "ocr-cft", plain, False, False, False, f"{plain} from a random init", {**_NO_REPLAY, **scratch}, offline_algo=offline),
    ]
    if has_align:
        out.insert(2, M(f"{name}-no-align", "ocr-cft", algo, True, False, False, f"{name} without value alignment",
                        reeval=True, align=False, constraint=True, offline_algo=offline))
    return out


for _spec in _ocr_methods("o2sac", "o2sac", "sac", "cql", "KL") + _ocr_methods("o2td3", "o2td3", "td3", "td3bc", "MSE") \
        + _ocr_methods("o2ppo", "ppo", "ppo", "iql", "auxiliary-advantage"):
    METHODS[_spec.name] = _spec


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}") from None


def register(spec: MethodSpec) -> None:
    """Add a method (other families register theirs on import)."""
    METHODS[spec.name] = spec
