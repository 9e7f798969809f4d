# SPDX-License-Identifier: MIT -- docs: docs/mher.md
"""MHER: Model-based Hindsight Experience Replay (Yang et al., 2021), with the paper's baselines and ablations.

Idea: HER relabels with goals the *logged* episode reached later. MHER rolls the target actor n steps from s_{t+1}
(original goal) in a learned dynamics model and relabels with the achieved goal of a visited state: only the goal is
imagined, and it follows the improving policy (Sec. 5.4); the actor also imitates the executed action on it (alpha).

Equations implemented (each marked in the code):
  model:  s' = s + std_o m(norm(s), norm(a)), loss |m - (norm(s') - norm(s))|^2               (Eq. 4; MSE or L1)
  MBR:    s'_0 = s_{t+1}, s'_{j+1} = model(s'_j, clip(pi'(s'_j, g) + noise)) under the ORIGINAL goal g, j < n;
          g' = phi(s'_k), k ~ U{0..n}, with probability mbr_ratio, else g is kept          (Alg. 1 lines 12-21)
  critic: mean (Q(s, a, g') - y)^2, y = r + gamma (1 - d) Q'(s', pi'(s', g'), g') clipped to the returns' range (Eq. 7)
  actor:  -mean Q(s, pi(s, g'), g') + action_l2 mean (pi/max_u)^2 + alpha mean_batch[mask mean_dims (a - pi(s, g'))^2]
          (Eq. 6, the joint loss; its last term is Eq. 5's supervised loss on the relabelled samples)
--algo, the paper's comparisons (Sec. 5.2, 5.5): mher; her (future goals, no SL); ddpg (desired goals only);
ddpg_mbr ("no SL"); ddpg_sl ("no MBR": DDPG on desired goals, a separate SL step on MBR goals); gcsl (App. D.2).
Deviations from the paper follow the authors' code (YangRui2015/Model-basedHER, mher/algo/): see docs/mher.md.

Usage: python mher.py --env FetchReach         # the demo: 20 random + 80 training episodes, solved
       python mher.py --env Point2D --algo her --eval-interval 100 --n-test-rollouts 50
"""

import os
import random
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import List, Literal, NamedTuple, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

import envs

ALGO = "mher"


@dataclass
class Args:  # one field per knob; the comment after each field is its --help text
    env: str = "FetchReach"  # goal env: a short name (FetchReach, Point2D, GoalReacher, ...) or a Gymnasium id
    algo: Literal["mher", "her", "ddpg", "ddpg_mbr", "ddpg_sl", "gcsl"] = "mher"  # the method; see docs/mher.md
    seed: int = 1  # seed of random, numpy, torch and the envs
    total_timesteps: int = 10_000  # env steps, all envs and the random warm-up episodes counted
    episode_length: int = 100  # T, steps per episode (the paper's 100 on every env; Fetch's own default is 50)
    num_envs: int = 1  # parallel envs; one cycle collects one episode from each
    eval_interval: int = 500  # env steps between evaluations (none during the warm-up); one more ends the run
    n_test_rollouts: int = 10  # deterministic evaluation episodes per evaluation (paper: 100)
    n_batches: int = 5  # gradient steps per cycle
    batch_size: int = 64  # transitions per gradient step
    buffer_size: int = 1_000_000  # replay capacity in transitions
    random_episodes: int = 20  # episodes of uniformly random actions before training (in the budget), every method
    replay_k: int = 4  # her: relabelled : original goals ratio (gcsl: all relabelled); also the normalisers' goals
    mbr_ratio: float = 0.8  # fraction of each batch relabelled by the model (the rest keeps the desired goal)
    n_steps: int = 5  # n, model steps per rollout; g' is drawn from the n + 1 states visited
    alpha: float = 3.0  # weight of Eq. 6's supervised term (mher; ddpg_sl: the code's leftover term on desired goals)
    gamma: Optional[float] = None  # discount; unset: 1 - 1/T (0.99 for T = 100)
    polyak: float = 0.9  # target smoothing: target <- polyak * target + (1 - polyak) * online, once per cycle
    lr_actor: float = 1e-3  # Adam learning rate of the actor
    lr_critic: float = 1e-3  # Adam learning rate of the critic
    action_l2: float = 1.0  # weight of the actor's action penalty mean((pi / max_u)^2)
    noise_eps: float = 0.2  # std of the Gaussian action noise (collecting, model rollouts), in units of max_u
    random_eps: float = 0.3  # probability of a uniformly random action while collecting
    hidden_dims: List[int] = field(default_factory=lambda: [256, 256, 256])  # actor and critic hidden widths (ReLU)
    dyn_hidden_dims: List[int] = field(default_factory=lambda: [256] * 4)  # dynamics model hidden widths (ReLU)
    ensemble: int = 1  # dynamics models; each model step trains one at random, predictions average them
    dyn_loss: Literal["mse", "l1"] = "mse"  # model loss on the normalised state change: Eq. 4's MSE or the code's L1
    lr_model: float = 1e-3  # Adam learning rate of the dynamics model
    dyn_updates: int = 2  # model gradient steps on each training batch
    dyn_warmup: int = 100  # model gradient steps (batch 512) after the random episodes
    clip_obs: float = 200.0  # observations and goals are clipped to +-clip_obs before normalising
    clip_range: float = 5.0  # normalised inputs are clipped to +-clip_range
    norm_eps: float = 1e-4  # lower bound of the normaliser's std
    save_model: bool = False  # write actor, normalisers and args to runs/<run>/mher.pt at each evaluation and the end
    eval_checkpoint: Optional[str] = None  # evaluate this checkpoint for --n-test-rollouts episodes instead of training
    torch_threads: int = 1  # PyTorch CPU threads (0: PyTorch's default, every core)
    torch_deterministic: bool = True  # use deterministic torch algorithms
    cuda: bool = False  # train on the GPU if one is available


class Normalizer:
    """Running mean/std of a vector input (baselines' Normalizer): clip +-clip_obs, standardise, clip +-clip_range."""

    def __init__(self, size, eps=0.01, clip_obs=200.0, clip_range=5.0):
        self.eps, self.clip_obs, self.clip_range = eps, clip_obs, clip_range
        self.sum, self.sumsq, self.count = np.zeros(size), np.zeros(size), 0
        self.mean, self.std = np.zeros(size, np.float32), np.ones(size, np.float32)

    def update(self, x):
        x = np.clip(x, -self.clip_obs, self.clip_obs).reshape(-1, self.sum.shape[0])
        self.sum += x.sum(0)
        self.sumsq += np.square(x, dtype=np.float64).sum(0)
        self.count += len(x)
        self.mean = (self.sum / self.count).astype(np.float32)
        var = self.sumsq / self.count - np.square(self.sum / self.count)
        self.std = np.sqrt(np.maximum(self.eps**2, var)).astype(np.float32)

    def __call__(self, x):
        x = np.clip(x, -self.clip_obs, self.clip_obs)
        return np.clip((x - self.mean) / self.std, -self.clip_range, self.clip_range).astype(np.float32)

    def state_dict(self):
        return {k: torch.as_tensor(getattr(self, k)) for k in ("sum", "sumsq", "count", "mean", "std")}

    def load_state_dict(self, state):
        self.sum, self.sumsq, self.mean, self.std = (state[k].numpy() for k in ("sum", "sumsq", "mean", "std"))
        self.count = int(state["count"])


def mlp(in_dim, out_dim, hidden_dims, activation=nn.ReLU):
    layers, dims = [], [in_dim, *hidden_dims]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


class Actor(nn.Module):
    """pi(s, g) = max_u tanh(MLP([o_norm, g_norm]))."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dims, max_u):
        super().__init__()
        self.net, self.max_u = mlp(obs_dim + goal_dim, act_dim, hidden_dims), max_u

    def forward(self, x):
        return self.max_u * torch.tanh(self.net(x))


class Critic(nn.Module):
    """Q(s, a, g) = MLP([o_norm, g_norm, a / max_u])."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dims, max_u):
        super().__init__()
        self.net, self.max_u = mlp(obs_dim + goal_dim + act_dim, 1, hidden_dims), max_u

    def forward(self, x, a):
        return self.net(torch.cat([x, a / self.max_u], -1)).squeeze(-1)


class Batch(NamedTuple):
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    g: np.ndarray
    dones: np.ndarray
    ag_next: np.ndarray  # phi(s_{t+1}), the achieved goal the rewards are computed from


class EpisodeBuffer:
    """Whole episodes obs[E, T+1], ag[E, T+1], g[E, T], actions[E, T] and their lengths ep_len (tasks that end on
    success end early; later steps are unused); sample() does HER's relabeling."""

    def __init__(self, capacity, T, obs_dim, goal_dim, act_dim, env, future_p, rng):
        self.E, self.T, self.env, self.future_p, self.rng = max(capacity // T, 1), T, env, future_p, rng
        self.obs, self.ag = (np.zeros((self.E, T + 1, dim), np.float32) for dim in (obs_dim, goal_dim))
        self.g, self.actions = (np.zeros((self.E, T, dim), np.float32) for dim in (goal_dim, act_dim))
        self.ep_len, self.ptr, self.size = np.zeros(self.E, np.int64), 0, 0

    def store(self, obs, ag, g, actions, ep_len):
        """Add a batch of episodes; returns their indices."""
        idx = (self.ptr + np.arange(len(ep_len))) % self.E
        self.obs[idx], self.ag[idx], self.g[idx], self.actions[idx], self.ep_len[idx] = obs, ag, g, actions, ep_len
        self.ptr, self.size = (self.ptr + len(ep_len)) % self.E, min(self.size + len(ep_len), self.E)
        return idx

    def sample(self, batch_size, future_p=None, episodes=None):
        """Real transitions whose g is a HER future goal with probability future_p (unset: the buffer's)."""
        e = self.rng.integers(0, self.size, batch_size) if episodes is None else self.rng.choice(episodes, batch_size)
        T_e = self.ep_len[e]
        t = (self.rng.random(batch_size) * T_e).astype(np.int64)
        t_goal = t + 1 + (self.rng.random(batch_size) * (T_e - t)).astype(np.int64)  # future: t+1 .. T_e
        her = self.rng.random(batch_size) < (self.future_p if future_p is None else future_p)
        g = np.where(her[:, None], self.ag[e, t_goal], self.g[e, t])
        b = Batch(self.obs[e, t], self.actions[e, t], None, self.obs[e, t + 1], None, None, self.ag[e, t + 1])
        return self.with_goals(b, g)

    def with_goals(self, b, g):
        """The batch with goals g, rewards and terminations recomputed for them (one vectorised call each)."""
        r = self.env.compute_reward(b.ag_next, g, None).astype(np.float32)
        d = np.broadcast_to(self.env.compute_terminated(b.ag_next, g, None), r.shape).astype(np.float32)
        return b._replace(g=g, rewards=r, dones=d)


def td_target(r, d, q_next, gamma, rewards=(-1.0, 0.0)):
    """y = r + gamma (1 - d) Q'(s', pi'(s')), clipped to the range of returns [r_fail, r_success] / (1 - gamma)."""
    return (r + gamma * (1 - d) * q_next).clamp(rewards[0] / (1 - gamma), rewards[1] / (1 - gamma))


def step(opt, loss):
    """One Adam step on loss; returns its value."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


# ---- MHER: what differs from her_ddpg.py ----
class Dynamics(nn.Module):
    """Eq. 4's s' = s + m(s, a) in normalised state space (the authors' code): s' = s + std_o m(norm(s), norm(a)),
    with its own running, unclipped normalisers and optimiser. An ensemble averages its members' predictions."""

    def __init__(self, obs_dim, act_dim, hidden_dims, ensemble, loss, lr, device):
        super().__init__()
        self.members = nn.ModuleList(mlp(obs_dim + act_dim, obs_dim, hidden_dims) for _ in range(ensemble)).to(device)
        self.opt = torch.optim.Adam(self.parameters(), lr=lr)
        self.o_norm, self.u_norm = (Normalizer(dim, 1e-4, np.inf, np.inf) for dim in (obs_dim, act_dim))
        self.loss, self.device = loss, device

    @torch.no_grad()
    def predict(self, s, a):
        x = torch.as_tensor(np.concatenate([self.o_norm(s), self.u_norm(a)], -1), device=self.device)
        return s + torch.stack([m(x) for m in self.members]).mean(0).cpu().numpy() * self.o_norm.std

    def fit(self, b, rng, n_steps):
        """Statistics of the batch's real (s, a, s') first, as the code does, then n_steps steps of random members."""
        self.o_norm.update(np.concatenate([b.obs, b.next_obs]))
        self.u_norm.update(b.actions)
        x = torch.as_tensor(np.concatenate([self.o_norm(b.obs), self.u_norm(b.actions)], -1), device=self.device)
        target = torch.as_tensor(self.o_norm(b.next_obs) - self.o_norm(b.obs), device=self.device)
        loss = float("nan")
        for _ in range(n_steps):
            err = self.members[rng.integers(len(self.members))](x) - target
            loss = step(self.opt, err.pow(2).mean() if self.loss == "mse" else err.abs().mean())  # Eq. 4, or L1
        return loss


def goal_indices(obs, ag, env_name):
    """phi as indices: the observation coordinates equal to each achieved-goal coordinate over the given steps."""
    idx = [next((j for j in range(obs.shape[-1]) if np.array_equal(obs[..., j], ag[..., i])), None)
           for i in range(ag.shape[-1])]
    if None in idx:
        raise envs.EnvError(f"{env_name}: MBR needs the achieved goal to be coordinates of the observation (phi)")
    return np.array(idx)


def warm_up_model(buffer, dynamics, args, rng):
    """Alg. 1 line 3: find phi, then dyn_warmup model steps on batches of 512 real transitions. Returns (phi, loss)."""
    goal_idx = goal_indices(buffer.obs[:buffer.size], buffer.ag[:buffer.size], args.env)
    losses = [dynamics.fit(buffer.sample(512, future_p=0.0), rng, 1) for _ in range(args.dyn_warmup)]
    return goal_idx, (losses or [float("nan")])[-1]


def mbr_relabel(o2, g, actor_target, dynamics, o_norm, g_norm, goal_idx, args, rng, max_u, device):
    """Model-based relabeling (Alg. 1 lines 12-21): the new goals and the mask of relabelled samples."""
    states, s = [o2], o2
    for _ in range(args.n_steps):  # batched rollout from the real s_{t+1} under the ORIGINAL goal g
        with torch.no_grad():
            a = actor_target(torch.as_tensor(np.concatenate([o_norm(s), g_norm(g)], -1), device=device)).cpu().numpy()
        a = np.clip(a + args.noise_eps * max_u * rng.standard_normal(a.shape), -max_u, max_u)  # target actor + noise
        s = dynamics.predict(s, a)
        states.append(s)
    k = rng.integers(0, args.n_steps + 1, len(o2))  # n + 1 candidates; k = 0 is the real phi(s_{t+1})
    g_model = np.stack(states, 1)[np.arange(len(o2)), k][:, goal_idx]
    mask = rng.random(len(o2)) < args.mbr_ratio  # the rest keep the desired goal
    return np.where(mask[:, None], g_model, g).astype(np.float32), mask


def model_relabel(b, buffer, dynamics, actor_target, o_norm, g_norm, goal_idx, args, rng, max_u, device):
    """Alg. 1 lines 8-21: model steps on the batch, then MBR. Returns the critic's batch, the SL goals and mask, and
    the model loss and the relabelled goals' mean distance from the desired ones (Fig. 4's curriculum)."""
    model_loss = dynamics.fit(b, rng, args.dyn_updates)
    g_sl, mask = mbr_relabel(b.next_obs, b.g, actor_target, dynamics, o_norm, g_norm, goal_idx, args, rng, max_u,
                             device)  # s_t, a_t and s_{t+1} stay as they are: only the goal changes
    dist = float(np.linalg.norm(g_sl[mask] - b.g[mask], axis=-1).mean()) if mask.any() else None
    b_critic = b if args.algo == "ddpg_sl" else buffer.with_goals(b, g_sl)  # ddpg_sl: the critic keeps the desired g
    return b_critic, g_sl, mask.astype(np.float32), model_loss, dist


def sl_loss(actor, x_sl, a, mask):
    """Eq. 5, the code's form: mean over the whole batch of mask * mean over action dims of (a - pi(s, g'))^2."""
    return (mask * (a - actor(x_sl)).pow(2).mean(-1)).mean()


def update(batch, actor, critic, actor_target, critic_target, actor_opt, critic_opt, args, gamma, rewards, alpha):
    """One gradient step of the critic (Eq. 7), then of the actor (Eq. 6's joint loss); gcsl: of the actor alone.
    batch: tensors (x, a, r, x2, d, x_sl, mask), x_sl the inputs with the SL term's goals. Returns the losses."""
    x, a, r, x2, d, x_sl, mask = batch
    if args.algo == "gcsl":  # App. D.2: ||a_t - pi(s_t, g')||^2 on every (future-relabelled) sample; no critic
        return {"sl_loss": step(actor_opt, sl_loss(actor, x, a, torch.ones_like(r)))}
    if args.algo == "ddpg_sl":  # Sec. 5.5 "no MBR" as the code runs it (ddpg.py train_policy): an SL step, weight 1,
        sl_step = step(actor_opt, sl_loss(actor, x_sl[mask > 0], a[mask > 0], 1.0)) if mask.any() else float("nan")
        for net, target in ((actor, actor_target), (critic, critic_target)) * 3:  # on the MBR samples alone, then 3
            soft_update(net, target, args.polyak)  # soft updates of both targets, which the critic's target y uses
        x_sl = x  # the code's joint loss still has alpha * mask * BC on g: ddpg.py builds it before alpha = 0
    with torch.no_grad():
        y = td_target(r, d, critic_target(x2, actor_target(x2)), gamma, rewards)
    q = critic(x, a)
    critic_loss = step(critic_opt, (q - y).pow(2).mean())  # Eq. 7: mean squared error to the clipped target
    pi = actor(x)
    critic.requires_grad_(False)  # the actor loss only needs dQ/da, not the critic's weight gradients
    sl = sl_loss(actor, x_sl, a, mask) if alpha > 0 else torch.zeros(())
    actor_loss = -critic(x, pi).mean() + args.action_l2 * (pi / actor.max_u).pow(2).mean() + alpha * sl  # Eq. 6
    critic.requires_grad_(True)
    return {"critic_loss": critic_loss, "actor_loss": step(actor_opt, actor_loss), "q_values": q.mean().item(),
            "sl_loss": sl_step if args.algo == "ddpg_sl" else sl.item()}
# ---- end ----


def soft_update(net, target, polyak):
    """target <- polyak * target + (1 - polyak) * net."""
    with torch.no_grad():
        for p, p_t in zip(net.parameters(), target.parameters()):
            p_t.lerp_(p, 1 - polyak)


class Episodes(NamedTuple):
    obs: np.ndarray  # [n, T+1, obs_dim]
    ag: np.ndarray  # [n, T+1, goal_dim]
    g: np.ndarray  # [n, T, goal_dim]
    actions: np.ndarray  # [n, T, act_dim]
    ep_len: np.ndarray  # [n]
    success: np.ndarray  # [n], is_success at each episode's final step
    ret: np.ndarray  # [n], undiscounted return


def rollout(vec_env, actor, o_norm, g_norm, T, device, args, rng, max_u, *, explore, uniform=False):
    """One episode in each env (reset together, in lockstep); explore: HER's exploration; uniform: random actions."""
    n = vec_env.num_envs
    ob, _ = vec_env.reset()
    obs, ag = (np.zeros((n, T + 1, ob[k].shape[-1]), np.float32) for k in ("observation", "achieved_goal"))
    g = np.zeros((n, T, ob["desired_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T, vec_env.single_action_space.shape[0]), np.float32)
    ep_len, success, ret, running = np.full(n, T), np.zeros(n), np.zeros(n), np.ones(n, bool)
    obs[:, 0], ag[:, 0] = ob["observation"], ob["achieved_goal"]
    for t in range(T):
        g[:, t] = ob["desired_goal"]
        if uniform:
            a = rng.uniform(-max_u, max_u, actions[:, t].shape).astype(np.float32)
        else:
            x = np.concatenate([o_norm(ob["observation"]), g_norm(ob["desired_goal"])], -1)
            with torch.no_grad():
                a = actor(torch.as_tensor(x, device=device)).cpu().numpy()
        if explore and not uniform:  # Gaussian noise, then with probability random_eps a uniformly random action
            a = np.clip(a + args.noise_eps * max_u * rng.standard_normal(a.shape), -max_u, max_u)
            random_a = rng.uniform(-max_u, max_u, a.shape)
            a = np.where(rng.random((n, 1)) < args.random_eps, random_a, a).astype(np.float32)
        ob, r, terminated, truncated, info = vec_env.step(a)
        actions[:, t], obs[:, t + 1], ag[:, t + 1] = a, ob["observation"], ob["achieved_goal"]
        ret += r * running
        success = np.where(running, info["is_success"], success)  # success at the episode's final step
        ended = running & (terminated | (t == T - 1))
        ep_len[ended & terminated] = t + 1
        running &= ~ended
        if not running.any():
            break
    return Episodes(obs, ag, g, actions, ep_len, success, ret)


def evaluate(vec_env, actor, o_norm, g_norm, T, device, n_episodes, args, rng, max_u):
    """Deterministic policy; success = is_success at each episode's final step. Returns (success rate, return)."""
    eps = [rollout(vec_env, actor, o_norm, g_norm, T, device, args, rng, max_u, explore=False)
           for _ in range(-(-n_episodes // vec_env.num_envs))]  # ceil(n_episodes / num_envs) rounds
    return tuple(float(np.concatenate([getattr(ep, k) for ep in eps])[:n_episodes].mean()) for k in ("success", "ret"))


def make_env(args, **kwargs):
    return envs.make(args.env, max_episode_steps=args.episode_length, **kwargs)


def make_vec_env(args, n, seed):
    """n copies of the goal env, seeded; rollout() resets them together and stores nothing past an episode's end."""
    vec_env = gym.vector.SyncVectorEnv([lambda: make_env(args) for _ in range(n)])
    vec_env.reset(seed=seed)
    return vec_env


def check_env(env, args):
    """One-line errors for envs and budgets this script cannot handle; returns the env's (r_fail, r_success)."""
    space = env.action_space
    if not isinstance(space, gym.spaces.Box) or np.any(space.high != space.high[0]) or np.any(space.low != -space.high):
        raise envs.EnvError(f"{args.env} has {space} actions; MHER needs a continuous Box action space [-u, u]^n")
    goals = env.observation_space["achieved_goal"], env.observation_space["desired_goal"]  # FrankaKitchen: dicts
    if not all(isinstance(s, gym.spaces.Box) for s in goals) or goals[0].shape != goals[1].shape:
        raise envs.EnvError(f"{args.env}: achieved and desired goals are not arrays of one shape to relabel")
    for name in ("total_timesteps", "episode_length", "num_envs", "eval_interval", "n_batches", "batch_size",
                 "buffer_size", "n_steps", "ensemble", "n_test_rollouts"):
        if getattr(args, name) < (0 if name in ("n_batches", "n_steps") else 1):
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not (0 <= args.random_eps <= 1 and 0 <= args.polyak <= 1 and 0 <= args.mbr_ratio <= 1) or args.alpha < 0:
        raise envs.EnvError("--random-eps, --polyak and --mbr-ratio must lie in [0, 1], and --alpha must be >= 0")
    return envs.sparse_rewards(env)  # -1/0 or 0/1: the target clip follows it; a dense reward is refused


def save_checkpoint(path, actor, o_norm, g_norm, args):
    """Tensors and plain types only, so loading needs no code from the file (weights_only=True)."""
    torch.save({"algo": ALGO, "actor": actor.state_dict(), "o_norm": o_norm.state_dict(),
                "g_norm": g_norm.state_dict(), "args": asdict(args)}, path)


def load_checkpoint(path):
    """A checkpoint this file wrote, loaded without running code from it; anything else is a one-line error."""
    if not os.path.isfile(path):
        raise envs.EnvError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # torch warns at length about a non-zip pickle before refusing it
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # refuses pickled code
    except Exception as e:
        raise envs.EnvError(f"{path} is not a {ALGO}.py checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("algo") != ALGO:
        raise envs.EnvError(f"{path} is not a {ALGO}.py checkpoint")
    return ckpt


def load_and_evaluate(args):
    """Evaluate a saved actor: success rate and mean return over --n-test-rollouts episodes."""
    ckpt = load_checkpoint(args.eval_checkpoint)
    saved = Args(**ckpt["args"])
    env = make_env(saved)
    dims = [env.observation_space[k].shape[0] for k in ("observation", "desired_goal")]
    max_u = float(env.action_space.high[0])
    actor = Actor(*dims, env.action_space.shape[0], saved.hidden_dims, max_u)
    actor.load_state_dict(ckpt["actor"])
    o_norm, g_norm = (Normalizer(d, saved.norm_eps, saved.clip_obs, saved.clip_range) for d in dims)
    o_norm.load_state_dict(ckpt["o_norm"])
    g_norm.load_state_dict(ckpt["g_norm"])
    rng, env_seed = seed_everything(args)
    vec_env = make_vec_env(saved, saved.num_envs, env_seed)
    sr, ret = evaluate(vec_env, actor, o_norm, g_norm, envs.horizon(env), "cpu", args.n_test_rollouts, saved, rng,
                       max_u)
    print(f"{saved.env}: success rate {sr:.3f}, mean return {ret:.2f} over {args.n_test_rollouts} episodes")
    vec_env.close()
    return sr


def seed_everything(args):
    """Seed random, numpy and torch; returns the agent's generator and the envs' seed, two independent streams."""
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.torch_threads or torch.get_num_threads())  # 0: PyTorch's default
    agent, env = np.random.SeedSequence(args.seed).spawn(2)  # default_rng(seed) would draw env.reset(seed)'s stream
    return np.random.default_rng(agent), int(env.generate_state(1)[0])


def make_networks(obs_dim, goal_dim, act_dim, max_u, args, device):
    """Every method builds all of these, in this order, so that a seed starts every method from the same actor."""
    actor, critic, actor_target, critic_target = (net(obs_dim, goal_dim, act_dim, args.hidden_dims, max_u).to(device)
                                                  for net in (Actor, Critic, Actor, Critic))
    actor_target.load_state_dict(actor.state_dict())
    critic_target.load_state_dict(critic.state_dict())
    actor_opt, critic_opt = (torch.optim.Adam(net.parameters(), lr) for net, lr in
                             ((actor, args.lr_actor), (critic, args.lr_critic)))
    dynamics = Dynamics(obs_dim, act_dim, args.dyn_hidden_dims, args.ensemble, args.dyn_loss, args.lr_model, device)
    return actor, critic, actor_target, critic_target, actor_opt, critic_opt, dynamics


def main(args):
    if args.eval_checkpoint:
        return load_and_evaluate(args)
    rng, env_seed = seed_everything(args)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # envs: one in this process for the spaces and the vectorised reward, num_envs for collecting
    env = make_env(args)
    rewards = check_env(env, args)
    T = envs.horizon(env)
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    act_dim, max_u = env.action_space.shape[0], float(env.action_space.high[0])
    gamma = args.gamma if args.gamma is not None else 1 - 1 / T
    vec_env = make_vec_env(args, args.num_envs, env_seed)
    use_model, alpha = args.algo in ("mher", "ddpg_mbr", "ddpg_sl"), args.alpha * (args.algo in ("mher", "ddpg_sl"))
    her_p = 1 - 1 / (1 + args.replay_k)  # the normalisers' goal samples, every method
    future_p = {"her": her_p, "gcsl": 1.0}.get(args.algo, 0.0)  # MHER uses no future goals

    actor, critic, actor_target, critic_target, actor_opt, critic_opt, dynamics = make_networks(
        obs_dim, goal_dim, act_dim, max_u, args, device)
    o_norm, g_norm = (Normalizer(d, args.norm_eps, args.clip_obs, args.clip_range) for d in (obs_dim, goal_dim))
    buffer = EpisodeBuffer(args.buffer_size, T, obs_dim, goal_dim, act_dim, env.unwrapped, future_p, rng)
    run_dir = f"runs/{args.env.replace(':', '_')}__{ALGO}_{args.algo}__{args.seed}__{int(time.time())}"
    writer, ckpt_path = SummaryWriter(run_dir), f"{run_dir}/{ALGO}.pt"
    writer.add_text("hyperparameters", "|param|value|\n|-|-|" + "".join(f"\n|{k}|{v}|" for k, v in vars(args).items()))
    print(f"{ALGO} | {env.spec.id} | {args.total_timesteps:,} env steps | seed {args.seed} | run {run_dir} | "
          "tensorboard --logdir runs", flush=True)

    global_step, grad_steps, episodes, next_eval, start_time, sr = 0, 0, 0, args.eval_interval, time.time(), 0.0
    goal_idx, losses = None, {}
    try:
        while global_step < args.total_timesteps:
            # collect one episode per env (uniformly random during the warm-up), store it, update the normalisers
            warmup = episodes < args.random_episodes
            ep = rollout(vec_env, actor, o_norm, g_norm, T, device, args, rng, max_u, explore=True, uniform=warmup)
            new = buffer.store(ep.obs, ep.ag, ep.g, ep.actions, ep.ep_len)
            global_step, episodes = global_step + int(ep.ep_len.sum()), episodes + len(ep.ep_len)
            sample = buffer.sample(int(ep.ep_len.sum()), future_p=her_p, episodes=new)  # goal stats see g'
            o_norm.update(sample.obs)
            g_norm.update(sample.g)
            writer.add_scalar("charts/success_rate", ep.success.mean(), global_step)
            writer.add_scalar("charts/episodic_return", ep.ret.mean(), global_step)
            if use_model and goal_idx is None and episodes >= args.random_episodes:  # Alg. 1 line 3
                goal_idx, losses["model"] = warm_up_model(buffer, dynamics, args, rng)

            # relabel (MBR or HER) and update: a burst of gradient steps, then one Polyak update of both targets
            for _ in range(0 if warmup else args.n_batches):
                b = buffer.sample(args.batch_size)
                g_sl, mask = b.g, np.zeros(args.batch_size, np.float32)
                if use_model:
                    b, g_sl, mask, losses["model"], dist = model_relabel(
                        b, buffer, dynamics, actor_target, o_norm, g_norm, goal_idx, args, rng, max_u, device)
                    if dist is not None:
                        writer.add_scalar("stats/relabel_distance", dist, global_step)
                x, x2, x_sl = (np.concatenate([o_norm(o), g_norm(g)], -1) for o, g in
                               ((b.obs, b.g), (b.next_obs, b.g), (b.obs, g_sl)))
                batch = [torch.as_tensor(v, device=device) for v in (x, b.actions, b.rewards, x2, b.dones, x_sl, mask)]
                losses.update(update(batch, actor, critic, actor_target, critic_target, actor_opt, critic_opt, args,
                                     gamma, rewards, alpha))
                grad_steps += 1  # of the actor (and critic); model steps are not counted
            soft_update(actor, actor_target, args.polyak)  # a no-op during the warm-up: nothing was trained yet
            soft_update(critic, critic_target, args.polyak)
            due, next_eval = global_step >= next_eval, (global_step // args.eval_interval + 1) * args.eval_interval
            if global_step < args.total_timesteps and (warmup or not due):
                continue

            # every eval_interval env steps after the warm-up, and at the end: evaluate the deterministic policy, log
            sr, eval_ret = evaluate(vec_env, actor, o_norm, g_norm, T, device, args.n_test_rollouts, args, rng, max_u)
            elapsed = time.time() - start_time
            sps, left = int(global_step / elapsed), elapsed / global_step * max(args.total_timesteps - global_step, 0)
            for tag, value in {**{f"losses/{k}": v for k, v in losses.items()}, "eval/success_rate": sr,
                               "eval/episodic_return": eval_ret, "charts/SPS": sps, "charts/gradient_steps": grad_steps,
                               "charts/episodes": episodes}.items():
                writer.add_scalar(tag, value, global_step)
            print(f"step {global_step:>8}/{args.total_timesteps} | success {sr:.2f} | return {eval_ret:7.2f} | "
                  f"SPS {sps:>5} | {elapsed:5.0f}s elapsed, ~{left:.0f}s left", flush=True)
            if args.save_model:
                save_checkpoint(ckpt_path, actor, o_norm, g_norm, args)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}")
    finally:
        for resource in (vec_env, env, writer):
            resource.close()
    saved = f" | checkpoint {ckpt_path} (evaluate: python {ALGO}.py --eval-checkpoint {ckpt_path})"
    if args.save_model:
        save_checkpoint(ckpt_path, actor, o_norm, g_norm, args)
    print(f"{ALGO} done | success {sr:.2f} | {global_step:,} env steps | {grad_steps:,} gradient steps | "
          f"{time.time() - start_time:.0f} s{saved if args.save_model else ''}", flush=True)
    return sr


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminated run saves like Ctrl-C does
    try:
        main(tyro.cli(Args))
    except envs.EnvError as e:
        sys.exit(f"error: {e}")
