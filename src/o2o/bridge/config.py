"""The config sections of the fine-tuning bridges: ``vpa`` (Marvel's Value Pre-Alignment,
``o2o.bridge.vpa``) and ``ocr`` (OCR-CFT's re-evaluation, alignment and constrained fine-tuning,
``o2o.bridge.ocr``), with their value checks. Plain dataclasses, below the bridges and the loops, so
that the run configs (``o2o.runconfig``) can hold them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from o2o.errors import ConfigError

REPLAY_MODES = ("half", "all", "part", "none")
REFERENCE_RULES = ("best", "interval")


@dataclass(frozen=True)
class VPAConfig:
    steps: int = field(default=20_000, metadata={"help": "gradient steps of value pre-alignment (released code: 20000)"})
    steps_per_call: int = field(default=1000, metadata={"help": "steps per jitted call (one metrics row each)"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size (released code: 64)"})
    alpha: float | None = field(default=None, metadata={"help": "alpha_vpa, entropy coefficient of the reward target; None = the online temperature"})
    cost_alpha: float | None = field(default=None, metadata={"help": "alpha_c_vpa of the cost target; None = 0.1 * alpha_vpa"})
    critic_lr: float | None = field(default=None, metadata={"help": "reward critic Adam learning rate; None = agent.critic_lr"})
    cost_critic_lr: float | None = field(default=None, metadata={"help": "cost critic Adam learning rate; None = agent.cost_critic_lr"})
    tau: float | None = field(
        default=None,
        metadata={"help": "Polyak rate of VPA's target critics; None = agent.tau. The start's error decays about as "
                  "gamma^(steps * tau): 0.99^(10000 * 0.02) = 0.13"},
    )
    init: Literal["pretrained", "fresh"] = field(default="pretrained", metadata={"help": "where the reward and cost critics start, for every Marvel-family method that "
                                             "copies them (VPA, if the method has it, fits them from there): the pre-trained run's or "
                                             "fresh ones (the only choice from a start without critics, e.g. BC-Safe)"})
    timeouts_terminal: bool = field(default=False, metadata={"help": "treat time-limit cuts as terminal (the released code's bug; off by default)"})


def check_vpa_config(cfg: VPAConfig) -> None:
    for name in ("steps", "steps_per_call", "batch_size"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"vpa.{name} must be > 0, got {getattr(cfg, name)}")
    if cfg.steps % cfg.steps_per_call:
        raise ConfigError(f"vpa.steps ({cfg.steps}) must be a multiple of vpa.steps_per_call ({cfg.steps_per_call})")
    if cfg.tau is not None and not 0 < cfg.tau <= 1:
        raise ConfigError(f"vpa.tau must be in (0, 1] or null, got {cfg.tau}")
    for name in ("alpha", "cost_alpha", "critic_lr", "cost_critic_lr"):
        value = getattr(cfg, name)
        if value is not None and value < 0:
            raise ConfigError(f"vpa.{name} must be >= 0, got {value}")
    if cfg.init not in ("pretrained", "fresh"):
        raise ConfigError(f"vpa.init must be pretrained | fresh, got '{cfg.init}'")


@dataclass(frozen=True)
class OCRConfig:
    replay: str = field(default="half", metadata={"help": "offline data online: half (50/50 batches) | all (preloaded) | part (top trajectories preloaded) | none"})
    offline_ratio: float = field(default=0.5, metadata={"help": "offline share of each minibatch in half mode"})
    part_trajectories: int = field(default=50, metadata={"help": "trajectories (highest return) preloaded in part mode"})
    reference: str = field(default="best", metadata={"help": "reference policy rule: best (best so far by evaluation) | interval (replace every reference_every)"})
    reference_every: int = field(default=1000, metadata={"help": "env steps between reference evaluations / replacements (10000 for narrow datasets)"})
    reference_episodes: int = field(default=10, metadata={"help": "evaluation episodes of the best-so-far rule (not counted in the budget)"})
    threshold_start: float | None = field(default=None, metadata={"help": "tau_0 of the constraint; None = the authors' value for the algorithm and dataset"})
    threshold_end: float | None = field(default=None, metadata={"help": "tau after threshold_steps; None = the authors' value"})
    threshold_steps: int = field(default=100_000, metadata={"help": "env steps over which tau loosens linearly"})
    lambda_lr_scale: float | None = field(default=None, metadata={"help": "multiplies agent.lambda_lr; None = 100000 / threshold_steps, so that lambda can move as far over a shortened loosening as over the paper's"})
    expert_data: bool | None = field(default=None, metadata={"help": "expert / medium-expert settings (alpha, tau); None = 'expert' in the dataset name"})
    reeval_steps: int = field(default=500_000, metadata={"help": "gradient steps of policy re-evaluation (authors: 500k)"})
    reeval_batch_size: int = field(default=256, metadata={"help": "re-evaluation minibatch size"})
    reeval_lr: float = field(default=3e-4, metadata={"help": "re-evaluation Adam learning rate"})
    reeval_alpha: float | None = field(default=None, metadata={"help": "SAC's fixed alpha in re-evaluation and alignment (0.2; 0.5 expert); None = by dataset"})
    reeval_ignore_timeouts: bool = field(default=False, metadata={"help": "PPO: Monte-Carlo returns run across timeouts (the released code's bug)"})
    align_steps: int = field(default=500_000, metadata={"help": "gradient steps of value alignment (authors: 500k, 1M AntMaze)"})
    align_batch_size: int = field(default=256, metadata={"help": "alignment minibatch size"})
    td3_align_rule: str = field(default="code", metadata={"help": "O2TD3 distance rule: code (released) | poster"})
    td3_align_k: float = field(default=1.0, metadata={"help": "O2TD3 k of the distance decay"})
    td3_align_sigma: float = field(default=0.2, metadata={"help": "O2TD3 sigma (floor in the poster, cap in the code)"})
    actor_after_align: str = field(default="aligned", metadata={"help": "online actor after alignment: aligned (pi_on, as released; the reference is the better of pi_off and pi_on) | best (the better of the two)"})
    steps_per_call: int = field(default=1000, metadata={"help": "bridge steps per jitted call (one metrics row each)"})
    clone_steps: int = field(default=20_000, metadata={"help": "behaviour-cloning steps when the offline actor has another policy class"})
    clone_batch_size: int = field(default=256, metadata={"help": "behaviour-cloning minibatch size"})
    clone_lr: float = field(default=3e-4, metadata={"help": "behaviour-cloning Adam learning rate"})
    clone_noise: float = field(default=0.1, metadata={"help": "std of the noise around a deterministic teacher's action (stochastic clone)"})
    ppo_aux_rule: str = field(default="code", metadata={"help": "O2PPO auxiliary advantage: code (floored, scaled, decaying mix) | poster (A + beta A_alpha)"})
    ppo_aux_alpha: float = field(default=2.0, metadata={"help": "alpha of A_alpha = alpha (log pi_ref + H(pi_ref))"})
    ppo_aux_beta: float = field(default=1.0, metadata={"help": "beta of the poster's A + beta A_alpha"})
    ppo_aux_decay_steps: int = field(default=250_000, metadata={"help": "code rule: env steps over which the mixing weight w_t decays 1 -> 0"})


def check_ocr_config(o: OCRConfig) -> None:
    if o.replay not in REPLAY_MODES:
        raise ConfigError(f"unknown replay mode ocr.replay='{o.replay}'; choose one of: {', '.join(REPLAY_MODES)}")
    if o.reference not in REFERENCE_RULES:
        raise ConfigError(f"unknown reference rule ocr.reference='{o.reference}'; choose one of: {', '.join(REFERENCE_RULES)}")
    if o.td3_align_rule not in ("code", "poster") or o.ppo_aux_rule not in ("code", "poster"):
        raise ConfigError("ocr.td3_align_rule and ocr.ppo_aux_rule must be code | poster")
    if o.actor_after_align not in ("best", "aligned"):
        raise ConfigError(f"ocr.actor_after_align must be best | aligned, got '{o.actor_after_align}'")
    if not 0.0 <= o.offline_ratio <= 1.0:
        raise ConfigError(f"ocr.offline_ratio must be in [0, 1], got {o.offline_ratio}")
    if o.lambda_lr_scale is not None and not o.lambda_lr_scale > 0:
        raise ConfigError(f"ocr.lambda_lr_scale must be > 0, got {o.lambda_lr_scale}")
    for name in ("reference_every", "reference_episodes", "threshold_steps", "reeval_batch_size", "align_batch_size",
                 "steps_per_call", "clone_batch_size", "part_trajectories", "ppo_aux_decay_steps"):
        if getattr(o, name) <= 0:
            raise ConfigError(f"ocr.{name} must be > 0, got {getattr(o, name)}")
    for name in ("reeval_steps", "align_steps", "clone_steps"):
        value = getattr(o, name)
        if value < 0 or value % o.steps_per_call:
            raise ConfigError(f"ocr.{name} ({value}) must be >= 0 and a multiple of ocr.steps_per_call ({o.steps_per_call})")
