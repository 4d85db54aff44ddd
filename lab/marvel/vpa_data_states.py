"""The aligned critic on the data's states and on pi0's own (issue #35, docs/results/marvel.md, Table 1).

    python lab/marvel/vpa_data_states.py RUN_DIR MC_PAIRS_NPZ

Prints the run's VPA critic (bridge/) at the data's state-actions, at pi0's actions on the data's states,
and at the Monte-Carlo pairs (with their Monte-Carlo mean), and how far those pairs' states lie from the
data (median nearest-neighbour distance, against the data's own).
"""
import sys
import numpy as np, jax, jax.numpy as jnp, json
from o2o.config import load_yaml
from o2o.runconfig import finetune_config_class, load_run_config
from o2o.bridge.pretrained import load_pretrained
from o2o.loops.finetune import agent_init_key, build_agent
from o2o.loops.marvel import load_bridge, offline_dataset
from o2o.methods import get_method
from o2o.envs import get_task
from o2o.agents.sac import actor_actions
run=sys.argv[1]  # a Marvel fine-tuning run with VPA
mc=sys.argv[2]  # the mc_pairs.npz that lab/marvel/vpa_convergence.py wrote for it
saved=load_yaml(run+'/config.yaml'); cfg=load_run_config(finetune_config_class(saved['method']), saved)
task=get_task(cfg.task); pre=load_pretrained(cfg.pretrained, task=task.name, need_cost_critic=False)
before=build_agent(cfg, get_method(cfg.method), pre, agent_init_key(cfg.seed))
after,_=load_bridge(__import__('pathlib').Path(run)/'bridge', before)
print('obs stats', np.asarray(pre.obs_stats[0])[:3], np.asarray(pre.obs_stats[1])[:3])
d=offline_dataset(pre, task)
idx=np.random.default_rng(0).integers(0,d.num_transitions,4096)
S=jnp.asarray(d.observations[idx]); A=jnp.asarray(d.actions[idx])
Q=lambda s,a: np.asarray(after.critic.apply_fn(after.critic.params,s,a).min(0))
Api=actor_actions(after.actor,S,jax.random.PRNGKey(0),False)
Adet=actor_actions(after.actor,S,jax.random.PRNGKey(0),True)
print('data states: Q(s,a_data)',Q(S,A).mean(),'Q(s,pi0 sample)',Q(S,Api).mean(),'Q(s,pi0 mean)',Q(S,Adet).mean())
m=np.load(mc)
for src in ('policy','random'):
  s=jnp.asarray(m[src+'/observations']); a=jnp.asarray(m[src+'/actions'])
  print(src,'Q(s,a)',Q(s,a).mean(),'Q(s,pi0)',Q(s,actor_actions(after.actor,s,jax.random.PRNGKey(1),False)).mean(),'MC',m[src+'/returns'].mean())
# nearest-neighbour distance of policy states to data states
D=d.observations[::7]
for src in ('policy','random'):
  s=m[src+'/observations']
  nn=np.sqrt(((s[:,None,:]-D[None])**2).sum(-1)).min(1)
  print(src,'NN dist to data: median',np.median(nn))
s=d.observations[idx[:64]]; nn=np.sqrt(((s[:,None,:]-D[None])**2).sum(-1)); nn[nn==0]=np.inf; print('data NN median',np.median(nn.min(1)))
print('data reward scaled mean', 0.1*d.rewards.mean())
