# SPDX-License-Identifier: MIT -- docs: docs/reengage.md
"""ReenGAGE on SAC (Levine & Feizi, AAAI 2023, appendix "ReenGAGE with SAC"): reengage.py with SAC's actor and twin
critics. The term is Eq. (9) again; SAC's target uses the current actor's next action and an entropy bonus, both
goal-dependent, so the target's goal-gradient flows through them too. Deviations: docs page. The env picks the regime
(--regime overrides): seek on ContinuousSeek (reengage_seek.py's recipe, SB3's SAC), baselines (reengage.py's) else.

Equations implemented (each marked in the code); relabelling and rewards as reengage.py:
  target:        y = r + gamma (1 - d) (min_j Q'_j(s', a~, g') - ent_coef log pi(a~ | s', g')), not clipped,
                 a~ = max_u tanh(mu(s', g') + sigma(s', g') eps) from the current actor (no target actor)
  critic loss:   0.5 sum_j [mean (Q_j - y)^2 + alpha mean_{batch, goal dims} 1[r = r_fail] (G_Qj - G_y)^2]
                 G_y = dy/dg' through Q'_j's goal input, a~ and log pi; G_Qj = dQ_j/dg' by double backpropagation
  actor loss:    mean (ent_coef log pi(a~ | s, g') - min_j Q_j(s, a~, g'));  entropy: target entropy -dim(A)

Usage: python reengage_sac.py [--env FetchReach] [--alpha 0] [--eval-checkpoint runs/<run>/reengage_sac.pt]
"""

import math
import os
import random
import signal
import sys
import time
import warnings
from collections import namedtuple
from dataclasses import asdict, dataclass
from typing import List, Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

import envs

ALGO = "reengage_sac"


@dataclass
class Args:
    env: str = "ContinuousSeek:d=10"  # goal env: a short name (FetchReach, ContinuousSeek:d=10, ...) or a Gymnasium id
    regime: Optional[Literal["seek", "baselines"]] = None  # recipe of unset flags (unset: seek on ContinuousSeek)
    alpha: Optional[float] = None  # goal-gradient weight, Eq. (9); 0: SAC + HER (unset: 0.2 in seek, 2e-5 else)
    seed: int = 1  # seed of random, numpy, torch and the envs
    total_timesteps: Optional[int] = None  # env steps, all envs counted (unset: 5k; 20k on ContinuousSeek)
    num_envs: Optional[int] = None  # parallel envs, an episode each per cycle (unset: 2; 1 on ContinuousSeek)
    async_envs: bool = False  # step the envs in subprocesses (gymnasium's AsyncVectorEnv) instead of in this process
    env_threads: int = 1  # threads stepping MuJoCo envs (Fetch, Hand) on several cores, same results
    eval_interval: Optional[int] = None  # env steps between evals (unset: 1k; 2k on ContinuousSeek)
    n_test_rollouts: Optional[int] = None  # greedy evaluation episodes (unset: 10; 50 on ContinuousSeek)
    n_batches: Optional[int] = None  # gradient steps per cycle (unset: 10 in seek, one per env step; 40 else)
    batch_size: Optional[int] = None  # transitions per gradient step (unset: 256; 512 on ContinuousSeek)
    buffer_size: int = 1_000_000  # replay capacity in transitions
    replay_strategy: Optional[Literal["future", "future_sb3", "final", "episode", "none"]] = None
    """relabelled goals: later in the episode (drawn as baselines or as SB3 1.x does), its last step, anywhere in it,
    or none (unset: future_sb3 in seek, future else)"""
    replay_k: int = 4  # relabelled : original goals ratio; the relabel probability is 1 - 1/(1 + replay_k) = 0.8
    gamma: Optional[float] = None  # discount (unset: 0.95 in the seek regime; 1 - 1/T otherwise, 0.98 for T = 50)
    polyak: Optional[float] = None  # target <- polyak target + (1 - polyak) online (unset: 0.995 in seek, 0.95 else)
    polyak_every_step: Optional[bool] = None  # Polyak update after every gradient step (unset: on in seek)
    lr_actor: float = 1e-3  # Adam learning rate of the actor and of the entropy coefficient
    lr_critic: float = 1e-3  # Adam learning rate of the twin critics
    ent_coef_init: Optional[float] = None  # initial entropy coefficient, then learned (unset: 1 in seek, 0.1 else)
    noise_eps: Optional[float] = None  # std of the noise on the sampled action / max_u (unset: 0.03 in seek, 0.2 else)
    random_eps: Optional[float] = None  # probability of a uniformly random action (unset: 0 in seek, 0.3 else)
    random_episodes: Optional[int] = None  # random-action episodes before learning (unset: 100 in seek)
    hidden_dims: Optional[List[int]] = None  # hidden widths, ReLU (unset: 256 256 in seek, 256 256 256 else)
    normalize: Optional[bool] = None  # running mean/std normalisation of inputs (unset: off in seek, on else)
    clip_obs: float = 200.0  # observations and goals are clipped to +-clip_obs before normalising
    clip_range: float = 5.0  # normalised inputs are clipped to +-clip_range
    norm_eps: float = 0.01  # lower bound of the normaliser's std
    save_model: bool = False  # save actor, normalisers and args to runs/<run>/reengage_sac.pt at each evaluation
    eval_checkpoint: Optional[str] = None  # evaluate this checkpoint for --n-test-rollouts episodes instead of training
    capture_video: bool = False  # with --eval-checkpoint: save the first episode as a GIF next to the checkpoint
    torch_threads: int = 1  # PyTorch CPU threads (0: PyTorch's default, every core)
    torch_deterministic: bool = True  # use deterministic torch algorithms
    cuda: bool = False  # train on the GPU if one is available


ENV_DEFAULTS = {
    "default": dict(total_timesteps=5_000, num_envs=2, eval_interval=1_000, batch_size=256, n_test_rollouts=10),
    "ContinuousSeek": dict(regime="seek", total_timesteps=20_000, num_envs=1, eval_interval=2_000, batch_size=512,
                           n_test_rollouts=50),
}
REGIMES = {  # seek: reengage_seek.py's, the appendix's SAC runs on ContinuousSeek (SB3 SAC, ent_coef "auto")
    "seek": dict(alpha=0.2, n_batches=10, gamma=0.95, polyak=0.995, polyak_every_step=True, noise_eps=0.03,
                 random_eps=0.0, random_episodes=100, hidden_dims=[256, 256], normalize=False, ent_coef_init=1.0,
                 replay_strategy="future_sb3"),
    "baselines": dict(alpha=2e-5, n_batches=40, polyak=0.95, polyak_every_step=False, noise_eps=0.2, random_eps=0.3,
                      random_episodes=0, hidden_dims=[256, 256, 256], normalize=True, ent_coef_init=0.1,
                      replay_strategy="future"),
}


def fill_defaults(args):
    """Set every flag left unset (None) to its per-env default."""
    name = envs.parse(args.env)[0].split("-v")[0]
    args.regime = args.regime or ENV_DEFAULTS.get(name, {}).get("regime", "baselines")  # then its recipe fills the rest
    for key, value in {**REGIMES[args.regime], **ENV_DEFAULTS.get(name, ENV_DEFAULTS["default"])}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.clip_range = args.clip_range if args.normalize else float("inf")  # unnormalised: mean 0, std 1, no clip
    return args


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

    def torch(self, x):  # the same map on a tensor, differentiable: goal gradients w.r.t. the env's raw goal
        mean, std = torch.as_tensor(self.mean, device=x.device), torch.as_tensor(self.std, device=x.device)
        return ((x.clamp(-self.clip_obs, self.clip_obs) - mean) / std).clamp(-self.clip_range, self.clip_range)


def mlp(in_dim, out_dim, hidden_dims, activation=nn.ReLU):
    layers, dims = [], [in_dim, *hidden_dims]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


class Actor(nn.Module):
    """SAC's squashed Gaussian pi(a | s, g): a = max_u tanh(mu + sigma eps); forward() is the deterministic action."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dims, max_u):
        super().__init__()
        self.net, self.max_u = mlp(obs_dim + goal_dim, 2 * act_dim, hidden_dims), max_u

    def forward(self, x):
        return self.max_u * torch.tanh(self.net(x).chunk(2, -1)[0])

    def sample(self, x):  # a reparameterised sample and its log-probability (tanh-corrected), differentiable in x
        mu, log_std = self.net(x).chunk(2, -1)
        log_std = log_std.clamp(-20, 2)  # SB3's bounds
        eps = torch.randn_like(mu)
        u = mu + log_std.exp() * eps
        log_prob = (-0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)  # log(1 - tanh(u)^2)
        return self.max_u * torch.tanh(u), log_prob


class TwinCritic(nn.Module):
    """Q_j(s, a, g) = MLP_j([o_norm, g_norm, a / max_u]), j = 1, 2, stacked [2, batch]; x may be [2, batch, dim]."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dims, max_u):
        super().__init__()
        self.q1, self.q2, self.max_u = *(mlp(obs_dim + goal_dim + act_dim, 1, hidden_dims) for _ in range(2)), max_u

    def forward(self, x, a):
        xa = [torch.cat([x_j, a / self.max_u], -1) for x_j in x.expand(2, *x.shape[-2:])]
        return torch.stack([self.q1(xa[0]), self.q2(xa[1])]).squeeze(-1)


Batch = namedtuple("Batch", "obs actions rewards next_obs g dones")  # a relabelled sample, arrays [B, dim]


class EpisodeBuffer:
    """Whole episodes as arrays obs, ag [E, T+1], g, actions [E, T]; sample() relabels. Early ends: ep_len [E]."""

    def __init__(self, capacity, T, obs_dim, goal_dim, act_dim, env, strategy, replay_k, rng):
        self.E, self.T, self.env, self.strategy, self.rng = max(capacity // T, 1), T, env, strategy, rng
        self.future_p = 1 - 1 / (1 + replay_k) if strategy != "none" else 0.0
        self.obs = np.zeros((self.E, T + 1, obs_dim), np.float32)
        self.ag = np.zeros((self.E, T + 1, goal_dim), np.float32)
        self.g = np.zeros((self.E, T, goal_dim), np.float32)
        self.actions = np.zeros((self.E, T, act_dim), np.float32)
        self.ep_len = np.zeros(self.E, np.int64)
        self.ptr, self.size = 0, 0

    def store(self, obs, ag, g, actions, ep_len):
        idx = (self.ptr + np.arange(len(ep_len))) % self.E
        self.obs[idx], self.ag[idx], self.g[idx], self.actions[idx], self.ep_len[idx] = obs, ag, g, actions, ep_len
        self.ptr, self.size = (self.ptr + len(ep_len)) % self.E, min(self.size + len(ep_len), self.E)
        return idx

    def sample(self, batch_size, episodes=None):
        e = self.rng.integers(0, self.size, batch_size) if episodes is None else self.rng.choice(episodes, batch_size)
        T_e = self.ep_len[e]
        t = (self.rng.random(batch_size) * T_e).astype(np.int64)
        g = self.g[e, t]
        her = self.rng.random(batch_size) < self.future_p  # relabel with probability 1 - 1/(1 + replay_k)
        if self.strategy == "future":  # an achieved goal from t+1 .. T_e of the same episode
            t_goal = t + 1 + (self.rng.random(batch_size) * (T_e - t)).astype(np.int64)
        elif self.strategy == "final":
            t_goal = T_e
        elif self.strategy == "future_sb3":  # SB3 1.x's, the paper's (DLR-RM/stable-baselines3, her_replay_buffer.py):
            # the first int(0.8 B) rows, not a coin, at t <= T_e - 2, goals from s_{t+1} .. s_{T_e - 1}, never the last
            her = (np.arange(batch_size) < int(self.future_p * batch_size)) & (T_e > 1)
            t = np.where(her, (self.rng.random(batch_size) * (T_e - 1)).astype(np.int64), t)  # unrelabelled rows keep g
            t_goal = t + 1 + (self.rng.random(batch_size) * (T_e - 1 - t)).astype(np.int64)
        else:  # "episode": anywhere in 1 .. T_e
            t_goal = 1 + (self.rng.random(batch_size) * T_e).astype(np.int64)
        g[her] = self.ag[e[her], t_goal[her]]
        ag_next = self.ag[e, t + 1]
        # rewards and terminations recomputed for the new goals, one vectorised call each
        r = self.env.compute_reward(ag_next, g, None).astype(np.float32)
        d = np.broadcast_to(self.env.compute_terminated(ag_next, g, None), r.shape).astype(np.float32)
        return Batch(self.obs[e, t], self.actions[e, t], r, self.obs[e, t + 1], g, d)


# ---- ReenGAGE (SAC variant): what differs from her_ddpg.py ----
def reengage_critic_loss(o, a, r, o2, g, d, critic, critic_target, actor, ent_coef, g_norm, gamma, alpha, rewards):
    """SAC's twin-critic loss + alpha Eq. (9) -> (loss, term, [Q_1; Q_2]). o, o2 normalised; g raw: d/d(env's goal)."""
    g2 = g.detach().requires_grad_(alpha > 0)
    with torch.set_grad_enabled(alpha > 0):
        x2 = torch.cat([o2, g_norm.torch(g2)], -1)
        a2, log_prob2 = actor.sample(x2)  # the current actor, reparameterised: a~ and log pi depend on g
        y = r + gamma * (1 - d) * (critic_target(x2, a2).min(0).values - ent_coef * log_prob2)  # no clip: entropy
        grad_y = torch.autograd.grad(y.sum(), g2)[0] if alpha > 0 else None  # G_y: through Q'_j's goal, a~, log pi
    g1 = g.detach().expand(2, *g.shape).clone().requires_grad_(alpha > 0)  # one goal copy per critic
    q = critic(torch.cat([o.expand(2, *o.shape), g_norm.torch(g1)], -1), a)
    loss = 0.5 * (q - y.detach()).pow(2).mean(-1).sum()  # 0.5 sum_j MSE_j
    if alpha == 0:
        return loss, torch.zeros(()), q
    grad_q = torch.autograd.grad(q.sum(), g1, create_graph=True)[0]  # [2, batch, d]: G_Qj by double backprop
    mask = (r == rewards[0]).float().unsqueeze(-1)  # Eq. (9): only where r = r_fail (there grad_g r = 0)
    grad_match = 0.5 * (mask * (grad_q - grad_y) ** 2).mean((-2, -1)).sum()  # mean over batch AND goal dims
    return loss + alpha * grad_match, grad_match.detach(), q


def update(batch, g_norm, actor, critic, critic_target, log_ent_coef, actor_opt, critic_opt, ent_opt, args, gamma,
           rewards):
    """One SAC step (SB3's order): critics with the ReenGAGE term, then the actor, then the entropy coefficient."""
    o, a, r, o2, g, d = batch
    ent_coef = log_ent_coef.exp().detach()
    critic_loss, grad_match, q = reengage_critic_loss(o, a, r, o2, g, d, critic, critic_target, actor, ent_coef,
                                                      g_norm, gamma, args.alpha, rewards)
    critic_opt.zero_grad()
    critic_loss.backward()
    critic_opt.step()
    x = torch.cat([o, g_norm.torch(g)], -1)
    pi, log_prob = actor.sample(x)
    critic.requires_grad_(False)  # the actor loss only needs dQ/da, not the critics' weight gradients
    actor_loss = (ent_coef * log_prob - critic(x, pi).min(0).values).mean()  # SAC: maximise min Q + entropy
    critic.requires_grad_(True)
    actor_opt.zero_grad()
    actor_loss.backward()
    actor_opt.step()
    ent_loss = -(log_ent_coef * (log_prob.detach() - a.shape[-1])).mean()  # target entropy -dim(A)
    ent_opt.zero_grad()
    ent_loss.backward()
    ent_opt.step()
    return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "q_values": q.mean().item(),
            "grad_match": grad_match.item(), "masked_fraction": (r == rewards[0]).float().mean().item(),
            "ent_coef": ent_coef.item()}
# ---- end ----


def soft_update(net, target, polyak):
    """target <- polyak * target + (1 - polyak) * net."""
    with torch.no_grad():
        for p, p_t in zip(net.parameters(), target.parameters()):
            p_t.lerp_(p, 1 - polyak)


# one episode per env: obs, ag [n, T+1, dim]; g, actions [n, T, dim]; ep_len, success (at the final step), ret [n]
Episodes = namedtuple("Episodes", "obs ag g actions ep_len success ret")


def rollout(vec_env, actor, o_norm, g_norm, T, device, args, rng, max_u, *, explore, warmup=False):
    """One episode in each env (reset together, stepped in lockstep); explore samples and adds noise."""
    n = vec_env.num_envs
    ob, _ = vec_env.reset()
    obs, ag = (np.zeros((n, T + 1, ob[k].shape[-1]), np.float32) for k in ("observation", "achieved_goal"))
    g = np.zeros((n, T, ob["desired_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T, vec_env.single_action_space.shape[0]), np.float32)
    ep_len, success, ret, running = np.full(n, T), np.zeros(n), np.zeros(n), np.ones(n, bool)
    obs[:, 0], ag[:, 0] = ob["observation"], ob["achieved_goal"]
    for t in range(T):
        g[:, t] = ob["desired_goal"]
        x = torch.as_tensor(np.concatenate([o_norm(ob["observation"]), g_norm(ob["desired_goal"])], -1), device=device)
        with torch.no_grad():
            a = (actor.sample(x)[0] if explore else actor(x)).cpu().numpy()  # explore: a sample, plus noise
        if explore:  # Gaussian noise, then with probability random_eps a uniformly random action
            a = np.clip(a + args.noise_eps * max_u * rng.standard_normal(a.shape), -max_u, max_u)
            random_a = rng.uniform(-max_u, max_u, a.shape)
            a = np.where(rng.random((n, 1)) < (1.0 if warmup else args.random_eps), random_a, a).astype(np.float32)
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
    successes, returns = [], []
    while len(successes) < n_episodes:
        ep = rollout(vec_env, actor, o_norm, g_norm, T, device, args, rng, max_u, explore=False)
        successes += list(ep.success)
        returns += list(ep.ret)
    return float(np.mean(successes[:n_episodes])), float(np.mean(returns[:n_episodes]))


def make_env(args):
    return envs.make(args.env)


def make_vec_env(args, n):
    """n copies of the goal env; rollout() resets them together and stores nothing past an episode's early end."""
    fns = [lambda: make_env(args) for _ in range(n)]
    if args.async_envs:
        return gym.vector.AsyncVectorEnv(fns)
    return envs.ThreadedVectorEnv(fns, args.env_threads) if args.env_threads > 1 else gym.vector.SyncVectorEnv(fns)


def check_env(env, args):
    """One-line errors for envs and budgets this script cannot handle; returns the env's (r_fail, r_success)."""
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        raise envs.EnvError(f"{args.env} has {space} actions; SAC needs a continuous Box action space")
    if not (np.all(space.high == space.high[0]) and np.all(space.low == -space.high)):
        raise envs.EnvError(f"{args.env}: SAC here needs a symmetric action box [-max_u, max_u]^n, got {space}")
    if env.observation_space["achieved_goal"].shape != env.observation_space["desired_goal"].shape:
        raise envs.EnvError(f"{args.env}: achieved and desired goals differ in shape, so they cannot be relabelled")
    for name in ("total_timesteps", "num_envs", "eval_interval", "n_batches", "batch_size", "buffer_size",
                 "n_test_rollouts", "env_threads"):
        if getattr(args, name) < (0 if name == "n_batches" else 1):
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.random_eps <= 1 or not 0 <= args.polyak <= 1 or args.replay_k < 0 or args.ent_coef_init <= 0:
        raise envs.EnvError("--random-eps and --polyak must lie in [0, 1], --replay-k >= 0, --ent-coef-init > 0")
    return envs.sparse_rewards(env)  # -1/0 or 0/1: the term's mask follows it; a dense reward is refused


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
    """Evaluate a saved actor: success rate over --n-test-rollouts episodes, optionally a GIF of the first one."""
    ckpt = load_checkpoint(args.eval_checkpoint)
    saved = Args(**ckpt["args"])
    env = make_env(saved)
    dims = [env.observation_space[k].shape[0] for k in ("observation", "desired_goal")]
    max_u = float(env.action_space.high[0])
    actor = Actor(*dims, env.action_space.shape[0], saved.hidden_dims, max_u)
    actor.load_state_dict(ckpt["actor"])
    o_norm, g_norm = (Normalizer(dim, saved.norm_eps, saved.clip_obs, saved.clip_range) for dim in dims)
    o_norm.load_state_dict(ckpt["o_norm"])
    g_norm.load_state_dict(ckpt["g_norm"])
    vec_env = make_vec_env(saved, saved.num_envs)
    vec_env.reset(seed=args.seed)
    sr, ret = evaluate(vec_env, actor, o_norm, g_norm, envs.horizon(env), "cpu", args.n_test_rollouts, saved,
                       np.random.default_rng(args.seed), max_u)
    print(f"{saved.env}: success rate {sr:.3f}, mean return {ret:.2f} over {args.n_test_rollouts} episodes")
    if args.capture_video:  # one greedy episode as a GIF next to the checkpoint
        def act(ob):
            x = np.concatenate([o_norm(ob["observation"]), g_norm(ob["desired_goal"])])
            return actor(torch.as_tensor(x)).detach().numpy()
        envs.record_gif(saved.env, act, os.path.splitext(args.eval_checkpoint)[0] + ".gif", args.seed)
    vec_env.close()
    return sr


def log_evaluation(writer, global_step, args, sr, eval_ret, losses, grad_steps, episodes, o_norm, g_norm, start_time):
    """TensorBoard scalars and the console line of one evaluation."""
    elapsed = time.time() - start_time
    scalars = {**{f"losses/{k}": v for k, v in losses.items()}, "eval/success_rate": sr,
               "eval/episodic_return": eval_ret, "charts/SPS": int(global_step / elapsed),
               "charts/gradient_steps": grad_steps, "charts/episodes": episodes,
               "stats/o_mean": float(o_norm.mean.mean()), "stats/g_mean": float(g_norm.mean.mean())}
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, global_step)
    left = elapsed / global_step * max(args.total_timesteps - global_step, 0)
    print(f"step {global_step:>8}/{args.total_timesteps} | success {sr:.2f} | return {eval_ret:7.2f} | "
          f"SPS {int(global_step / elapsed):>5} | {elapsed:5.0f}s elapsed, ~{left:.0f}s left", flush=True)


def main(args):
    fill_defaults(args)
    if args.eval_checkpoint:
        return load_and_evaluate(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.torch_threads or torch.get_num_threads())  # 0: PyTorch's default
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(args.seed)

    # envs: one in this process for the spaces and the vectorised reward, num_envs for collecting
    env = make_env(args)
    rewards = check_env(env, args)
    T = envs.horizon(env)
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    act_dim, max_u = env.action_space.shape[0], float(env.action_space.high[0])
    gamma = args.gamma if args.gamma is not None else 1 - 1 / T
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=args.seed)

    # networks (no target actor: SAC's target samples the current actor), optimisers, normalisers, buffer
    dims = (obs_dim, goal_dim, act_dim, args.hidden_dims, max_u)
    actor, critic, critic_target = Actor(*dims).to(device), TwinCritic(*dims).to(device), TwinCritic(*dims).to(device)
    critic_target.load_state_dict(critic.state_dict())
    log_ent_coef = torch.full((1,), math.log(args.ent_coef_init), device=device, requires_grad=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.lr_actor, fused=True)  # fused: ~30% faster updates
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr_critic, fused=True)
    ent_opt = torch.optim.Adam([log_ent_coef], lr=args.lr_actor)
    o_norm, g_norm = (Normalizer(dim, args.norm_eps, args.clip_obs, args.clip_range) for dim in (obs_dim, goal_dim))
    buffer = EpisodeBuffer(args.buffer_size, T, obs_dim, goal_dim, act_dim, env.unwrapped, args.replay_strategy,
                           args.replay_k, rng)

    run_dir = f"runs/{args.env.replace(':', '_')}__{ALGO}__{args.seed}__{int(time.time())}"
    ckpt_path, writer = f"{run_dir}/{ALGO}.pt", SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    print(f"{ALGO} | {env.spec.id} | {args.total_timesteps:,} env steps | seed {args.seed} | run {run_dir} | "
          "tensorboard --logdir runs", flush=True)

    global_step, grad_steps, next_eval, start_time, sr, losses = 0, 0, args.eval_interval, time.time(), 0.0, {}
    try:
        while global_step < args.total_timesteps:
            # collect one episode per env with exploration, store it, update the normalisers
            ep = rollout(vec_env, actor, o_norm, g_norm, T, device, args, rng, max_u, explore=True,
                         warmup=buffer.size < args.random_episodes)
            new = buffer.store(ep.obs, ep.ag, ep.g, ep.actions, ep.ep_len)
            global_step += int(ep.ep_len.sum())
            if args.normalize:  # statistics from relabelled samples of the new episodes; seek: raw inputs, as SB3
                sample = buffer.sample(int(ep.ep_len.sum()), episodes=new)
                o_norm.update(sample.obs)
                g_norm.update(sample.g)
            writer.add_scalar("charts/success_rate", ep.success.mean(), global_step)
            writer.add_scalar("charts/episodic_return", ep.ret.mean(), global_step)

            # a burst of updates on relabelled batches, then one Polyak update of the target critics
            for i in range(args.n_batches if buffer.size >= args.random_episodes else 0):
                b = buffer.sample(args.batch_size)
                batch = [torch.as_tensor(x, device=device)  # goals stay raw: the loss differentiates w.r.t. them
                         for x in (o_norm(b.obs), b.actions, b.rewards, o_norm(b.next_obs), b.g, b.dones)]
                losses = update(batch, g_norm, actor, critic, critic_target, log_ent_coef, actor_opt, critic_opt,
                                ent_opt, args, gamma, rewards)
                grad_steps += 1
                if args.polyak_every_step or i == args.n_batches - 1:  # SB3 (seek): every step; baselines: per cycle
                    soft_update(critic, critic_target, args.polyak)
            if global_step < next_eval and global_step < args.total_timesteps:
                continue
            next_eval = (global_step // args.eval_interval + 1) * args.eval_interval

            # every eval_interval env steps and at the end: log, evaluate the deterministic policy, checkpoint
            sr, eval_ret = evaluate(vec_env, actor, o_norm, g_norm, T, device, args.n_test_rollouts, args, rng, max_u)
            log_evaluation(writer, global_step, args, sr, eval_ret, losses, grad_steps, buffer.size, o_norm, g_norm,
                           start_time)
            if args.save_model:
                save_checkpoint(ckpt_path, actor, o_norm, g_norm, args)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}")
        vec_env.close(terminate=True)  # do not wait for subprocess envs caught mid-step
    finally:
        vec_env.close()
        env.close()
        writer.close()
    saved = ""
    if args.save_model:
        save_checkpoint(ckpt_path, actor, o_norm, g_norm, args)
        saved = f" | checkpoint {ckpt_path} (evaluate: python {ALGO}.py --eval-checkpoint {ckpt_path})"
    print(f"{ALGO} done | success {sr:.2f} | {global_step:,} env steps | {grad_steps:,} gradient steps | "
          f"{time.time() - start_time:.0f} s{saved}", flush=True)
    return sr


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminated run saves like Ctrl-C does
    try:
        main(tyro.cli(Args))
    except envs.EnvError as e:
        sys.exit(f"error: {e}")
