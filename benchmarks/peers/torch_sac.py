"""A plain PyTorch SAC update, the same math as ``o2o.agents.sac.update``, as a speed peer.

- critics: two MLPs Q_i(s, a) (concat -> 256 -> 256 -> 1, ReLU); target copies updated by Polyak 0.005;
  y = r + gamma (1 - terminal) (min_j Qbar_j(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s');
  loss sum_i mean (Q_i - y)^2
- actor: MLP trunk 256 -> 256 (ReLU), linear heads for mean and log_std; log_std squashed by tanh
  into [-5, 2]; a = tanh(u), u ~ N(mean, std), log pi = log N(u) - sum log(1 - tanh(u)^2) computed
  exactly as 2 (log 2 - u - softplus(-2u)); loss mean(alpha log pi - min_j Q_j(s, a)) on the
  freshly updated critics
- temperature: log_alpha, loss mean(-alpha (log pi + H_target)), H_target = -|A|
- Adam 3e-4 for all three, update order critic -> actor -> temperature (as o2o)

Minibatches are drawn by random index from float32 tensors (a 1M-row buffer like o2o's).
The critic parameters are frozen (requires_grad False) during the actor's backward pass so that,
like JAX's ``grad`` w.r.t. the actor params only, no critic weight gradients are computed.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

LOG_2 = math.log(2.0)
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    if out_dim is not None:
        layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class Actor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden=(256, 256), log_std_min=-5.0, log_std_max=2.0):
        super().__init__()
        self.trunk = mlp(obs_dim, hidden, None)
        self.mean = nn.Linear(hidden[-1], act_dim)
        self.log_std = nn.Linear(hidden[-1], act_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.trunk(obs)
        log_std = torch.tanh(self.log_std(x))
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1.0)
        return self.mean(x), log_std


def tanh_gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    std = log_std.exp()
    eps = torch.randn_like(mean)
    u = mean + std * eps
    gauss = (-0.5 * eps.pow(2) - log_std - HALF_LOG_2PI).sum(-1)  # z = (u - mean)/std = eps
    log_det = (2.0 * (LOG_2 - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), gauss - log_det


class TwinCritic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden=(256, 256), num_critics: int = 2):
        super().__init__()
        self.qs = nn.ModuleList([mlp(obs_dim + act_dim, hidden, 1) for _ in range(num_critics)])

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)
        return torch.stack([q(x).squeeze(-1) for q in self.qs], 0)  # [num_critics, B]


class TorchSAC:
    """SAC with the hyper-parameters of ``o2o.agents.sac.SACConfig()`` defaults."""

    def __init__(self, obs_dim: int, act_dim: int, hidden=(256, 256), num_critics=2, lr=3e-4, gamma=0.99,
                 tau=0.005, init_temperature=1.0, seed=0, compile: bool = False):
        torch.manual_seed(seed)
        self.actor = Actor(obs_dim, act_dim, hidden)
        self.critic = TwinCritic(obs_dim, act_dim, hidden, num_critics)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(init_temperature), requires_grad=True)
        # foreach=True: the multi-tensor Adam (the CPU default is the per-parameter loop)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr, foreach=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr, foreach=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr, foreach=True)
        self.gamma, self.tau, self.target_entropy = gamma, tau, -float(act_dim)
        self.critic_params = list(self.critic.parameters())
        self.target_params = list(self.target.parameters())
        self._critic_loss: Callable = self.critic_loss
        self._actor_loss: Callable = self.actor_loss
        if compile:
            self._critic_loss = torch.compile(self.critic_loss)
            self._actor_loss = torch.compile(self.actor_loss)

    # ------------------------------------------------------------------ losses
    def critic_loss(self, obs, act, rew, next_obs, term, alpha):
        with torch.no_grad():
            mean, log_std = self.actor(next_obs)
            next_act, next_logp = tanh_gaussian_sample(mean, log_std)
            next_q = self.target(next_obs, next_act).min(0).values - alpha * next_logp
            y = rew + self.gamma * (1.0 - term) * next_q
        q = self.critic(obs, act)
        return ((q - y.unsqueeze(0)) ** 2).mean(1).sum()

    def actor_loss(self, obs, alpha):
        mean, log_std = self.actor(obs)
        act, logp = tanh_gaussian_sample(mean, log_std)
        q = self.critic(obs, act).min(0).values
        return (alpha * logp - q).mean(), logp

    # ------------------------------------------------------------------ update
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        obs, act, rew = batch["observations"], batch["actions"], batch["rewards"]
        next_obs, term = batch["next_observations"], batch["terminals"]
        alpha = self.log_alpha.detach().exp()

        critic_loss = self._critic_loss(obs, act, rew, next_obs, term, alpha)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.target_params, self.critic_params, self.tau)

        self.critic.requires_grad_(False)
        actor_loss, logp = self._actor_loss(obs, alpha)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        self.critic.requires_grad_(True)

        alpha_loss = (-self.log_alpha.exp() * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "alpha_loss": alpha_loss.detach()}


class TensorReplay:
    """Fixed-capacity float32 tensors; uniform minibatches by random index (with replacement)."""

    FIELDS = ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")

    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        shapes = {"observations": (obs_dim,), "actions": (act_dim,), "next_observations": (obs_dim,)}
        self.data = {k: torch.zeros((capacity,) + shapes.get(k, ()), dtype=torch.float32) for k in self.FIELDS}
        self.size = 0

    def add(self, rows: dict) -> None:
        n = len(rows["rewards"])
        for k in self.FIELDS:
            self.data[k][self.size:self.size + n] = torch.as_tensor(rows[k], dtype=torch.float32)
        self.size += n

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        index = torch.randint(0, self.size, (batch_size,))
        return {k: v[index] for k, v in self.data.items()}


def run_updates(agent: TorchSAC, replay: TensorReplay, num_updates: int, batch_size: int = 256) -> None:
    """``num_updates`` sample+update steps (what a training loop does between env steps)."""
    for _ in range(num_updates):
        agent.update(replay.sample(batch_size))
