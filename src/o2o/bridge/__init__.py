"""Offline -> online bridges: load a pre-trained run, turn its networks into an online agent, and
re-align its critics before fine-tuning (Marvel's VPA)."""

from o2o.bridge.pretrained import Pretrained, load_pretrained, to_sac_lag
from o2o.bridge.vpa import VPAConfig, run_vpa, vpa_targets

__all__ = ["Pretrained", "load_pretrained", "to_sac_lag", "VPAConfig", "run_vpa", "vpa_targets"]
