"""HTRPO: Hindsight Trust Region Policy Optimization (Zhang et al., IJCAI 2021), with its baselines and ablations.

Idea: TRPO is on-policy, so it cannot reuse an episode under a goal it was not collecting for... unless the
mismatch is corrected by importance sampling. HTRPO replays every episode of a batch under every goal achieved
anywhere in that batch, truncated where the new goal is first reached, and corrects each step by the per-decision
ratio of the policy's probabilities under the new and the original goal, normalised across episodes (weighted IS).
Both the surrogate objective and the trust region are estimated on these hindsight data; the KL is estimated by
QKL, the mean of 1/2 (log ratio)^2, whose variance is lower than the plain log ratio's. Hindsight Goal Filtering
(HGF) picks relabelling goals that cover the region of the real goals.

Equations implemented (each marked in the code; ../shared/specs/htrpo.md §2):
  goals:      G = unique achieved goals ag_{t+1} of the batch (2 decimals); all of them, or N_g by HGF (Alg. 2)
  relabel:    for every episode i and goal g'_j: L_ij = first t with success(ag_{t+1}, g'_j), +1, else T_i; pairs with
              L_ij = 1 dropped; r'_t = 0 except r'_{L-1} = T_max - L_ij + 1 on success; done' at t = L_ij - 1
  IS:         rho_ijt = prod_{k <= t} pi~(a_k | s_k, g'_j) / pi~(a_k | s_k, g_i)        (per decision, Eq. 12)
              w_ijt = rho_ijt / sum_i' rho_i'jt                                  (weighted IS, over episodes per j, t)
  advantage:  A = r' + gamma (1 - done') V(s', g') - V(s, g'), standardised           (one-step TD, GAE lambda = 0)
  surrogate:  L(theta) = mean exp(log pi_theta(a | s, g') - log pi~(a | s, g')) gamma^t w A                (Eq. 79)
  QKL:        K(theta) = (1 - gamma) / lambda sum gamma^t w 1/2 (log pi~ - log pi_theta)^2 <= delta   (Eq. 80)
              lambda = number of (episode, goal) pairs kept
  step:       x = CG(H + c I, grad L), H = Hessian of K; step sqrt(2 delta / x'Hx) x; backtracking line search
              (accept when the improvement is > 0 and > 0.1 of the expected one, and 0 < K < 1.5 delta)
  critic:     V(s, g') fitted to r' + gamma (1 - done') V_old(s', g') by full-batch Adam steps, after advantages
Only hindsight data train (the original-goal data are dropped, as in the authors' code).

Methods (--algo) and ablations (flags), all from this file:
  htrpo   the above             --no-qkl: the plain log-ratio KL estimate     --no-hgf: N_g random goals
  trpo    no hindsight: each episode under its own goal only (IS weights 1), the same surrogate and trust region
  hpg     hindsight policy gradient: the same weighted surrogate, one Adam step per batch, no trust region
          --no-weighted-is: w = rho       --dense: r'_t = -||ag_{t+1} - g'|| (no terminal bonus)

Defaults per env (flags left unset; htrpo.md §8, measured there on this kind of machine):
  BitFlip (k bits)   steps/iter 16 k, all goals (at most 64), gamma 0.9, damping 1e-2, [64, 64] tanh, no normaliser
  Fetch (T = 50)     steps/iter 400, N_g 30 with HGF, gamma 0.98, damping 1e-3, [64, 64] tanh, running normaliser
  other tasks        steps/iter 256, all goals (at most 64), gamma 0.95, damping 1e-3, [64, 64] tanh, no normaliser
  every env          delta = 1e-3, 10 CG iterations, 10 backtracks, critic Adam 5e-4 (10 steps; 20 on Fetch)
--paper gives Tables 2-3: delta 2e-5, 3200 steps/iter (1600 discrete), N_g 100, 3 x 256, 20 critic steps.
Deviations from the paper: delta 1e-3 by default (2e-5 suits the paper's larger batches and 2e6-step budget); the
Fisher-vector products use a random 20 % of the samples (--fvp-subsample; baselines' TRPO does the same); whole
episodes are collected until a batch holds >= steps/iter env steps (the code cuts the last one); gamma^t rather than
the code's gamma^(t+1) (a constant factor); "--dense" is our reading of the paper's undefined dense reward.

Usage:
  python htrpo.py                                                  # BitFlip, 8 bits: ~100 % within 5k env steps
  python htrpo.py --env BitFlip:n=16,start=zeros --total-timesteps 30000
  python htrpo.py --algo trpo                                      # no hindsight: stays near 0
  python htrpo.py --env FetchReach --total-timesteps 30000
  python htrpo.py --env FetchReach --discrete 3 --total-timesteps 30000       # 27 joint actions
  python htrpo.py --env FetchPush --paper --total-timesteps 2000000
  python htrpo.py --eval-checkpoint runs/<run>/htrpo.pt
"""

import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import List, Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

import envs


@dataclass
class Args:
    env: str = "BitFlip:n=8,start=zeros"
    """goal env with a -1/0 reward: BitFlip:n=8,start=zeros, FourRoomMaze, FetchReach, FetchPush, ..."""
    algo: Literal["htrpo", "trpo", "hpg"] = "htrpo"
    """HTRPO; TRPO without hindsight; or HPG (hindsight policy gradient, no trust region)"""
    qkl: bool = True
    """estimate the KL by QKL, 1/2 (log ratio)^2; --no-qkl uses the plain log ratio (ablation)"""
    hgf: bool = True
    """pick the N_g hindsight goals by Hindsight Goal Filtering; --no-hgf picks them at random (ablation)"""
    weighted_is: bool = True
    """normalise the IS ratios across episodes per goal and step; --no-weighted-is keeps the raw ratios (ablation)"""
    dense: bool = False
    """dense relabelled reward -||ag_{t+1} - g'|| instead of the sparse terminal bonus (ablation)"""
    discrete: Optional[int] = None
    """discretise a Box action space into this many bins per dimension (joint actions): discrete Fetch"""
    seed: int = 1
    """seed of random, numpy, torch and the envs"""
    total_timesteps: int = 5_000
    """training env steps (hindsight replays are not counted)"""
    num_envs: int = 4
    """envs stepped in lockstep while collecting"""
    steps_per_iter: Optional[int] = None
    """env steps per batch (whole episodes, at least this many); default per env, see above"""
    n_goals: Optional[int] = None
    """hindsight goals per batch, N_g; 0 means all achieved goals; default per env, see above"""
    gamma: Optional[float] = None
    """discount; default per env, see above"""
    max_kl: float = 1e-3
    """trust-region size delta on the hindsight QKL (the paper: 2e-5 with its batch sizes, see --paper)"""
    cg_damping: Optional[float] = None
    """damping c added to the Hessian in the conjugate gradient; default per env, see above"""
    cg_iters: int = 10
    """conjugate-gradient iterations"""
    fvp_subsample: float = 0.2
    """fraction of the hindsight samples used in the Hessian-vector products"""
    hidden_dims: Optional[List[int]] = None
    """tanh hidden layers of policy and critic; default [64, 64]"""
    lr_critic: float = 5e-4
    """Adam learning rate of the critic V(s, g)"""
    critic_iters: Optional[int] = None
    """full-batch critic steps per batch; default 10 (20 on Fetch)"""
    lr_policy: float = 1e-3
    """Adam learning rate of the policy (hpg only)"""
    normalize: Optional[bool] = None
    """running mean/std normalisation of observations and goals; default on for Fetch, off elsewhere"""
    paper: bool = False
    """the paper's Tables 2-3: delta 2e-5, 3200 steps/iter (1600 discrete), N_g 100, 3 x 256, 20 critic steps"""
    eval_interval: Optional[int] = None
    """env steps between evaluations; default 4 batches"""
    n_test_rollouts: int = 50
    """greedy evaluation episodes"""
    save_model: bool = False
    """write policy, normalisers and args to runs/<run>/htrpo.pt after each evaluation and at the end"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint for --n-test-rollouts episodes instead of training"""
    torch_threads: int = 1
    """PyTorch CPU threads; 0 keeps PyTorch's default"""
    torch_deterministic: bool = True
    """use deterministic torch algorithms"""
    cuda: bool = False
    """train on the GPU if one is available"""


def fill_defaults(args, env):
    """The per-env defaults of the docstring, for the fields the user left unset."""
    fetch = env.spec.id.startswith("Fetch")
    bits = env.unwrapped.n if env.spec.id.startswith("BitFlip") else None
    discrete = not isinstance(env.action_space, gym.spaces.Box)
    if args.paper:
        args.max_kl = 2e-5
        defaults = dict(steps_per_iter=1600 if discrete else 3200, n_goals=100, gamma=0.98, cg_damping=1e-3,
                        hidden_dims=[256, 256, 256], critic_iters=20, normalize=fetch)
    elif fetch:
        defaults = dict(steps_per_iter=400, n_goals=30, gamma=0.98, cg_damping=1e-3, critic_iters=20, normalize=True)
    elif bits:
        defaults = dict(steps_per_iter=16 * bits, n_goals=0 if bits <= 8 else 64, gamma=0.9, cg_damping=1e-2)
    else:
        defaults = dict(steps_per_iter=256, n_goals=64, gamma=0.95, cg_damping=1e-3)
    defaults = {"hidden_dims": [64, 64], "critic_iters": 10, "normalize": False, **defaults}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.eval_interval is None:
        args.eval_interval = 4 * args.steps_per_iter


class Normalizer:
    """Running mean/std of a vector input: clip +-clip_obs, standardise, clip +-clip_range. Frozen within a batch."""

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
        return {"sum": self.sum, "sumsq": self.sumsq, "count": self.count, "mean": self.mean, "std": self.std}

    def load_state_dict(self, state):
        self.sum, self.sumsq, self.count = state["sum"], state["sumsq"], state["count"]
        self.mean, self.std = state["mean"], state["std"]


def mlp(in_dim, out_dim, hidden_dims, out_gain):
    """tanh MLP with orthogonal init (gain sqrt 2 hidden, out_gain last) and zero biases, as the authors' nets."""
    layers, dims = [], [in_dim, *hidden_dims]
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(d_in, d_out), nn.Tanh()]
    layers.append(nn.Linear(dims[-1], out_dim))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, out_gain if layer is layers[-1] else np.sqrt(2))
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class CategoricalPolicy(nn.Module):
    """pi(a | s, g) = (softmax(MLP([s, g])) + 0.01 / n) / 1.01: the code's smoothing keeps every ratio finite."""

    def __init__(self, in_dim, n_actions, hidden_dims):
        super().__init__()
        self.net, self.n = mlp(in_dim, n_actions, hidden_dims, 0.1), n_actions

    def log_prob(self, x, a):
        p = (torch.softmax(self.net(x), -1) + 0.01 / self.n) / 1.01
        return p.gather(-1, a.long().unsqueeze(-1)).squeeze(-1).log()

    def act(self, x, greedy):
        logits = self.net(x)
        return logits.argmax(-1) if greedy else torch.distributions.Categorical(
            (torch.softmax(logits, -1) + 0.01 / self.n) / 1.01).sample()


class GaussianPolicy(nn.Module):
    """pi(a | s, g) = N(max_u tanh(MLP([s, g])), sigma^2), one state-independent log sigma per action dimension
    (starts at sigma = 1, floored at 0.1). Samples are stored unclipped; the env sees them clipped."""

    def __init__(self, in_dim, act_dim, hidden_dims, max_u):
        super().__init__()
        self.net, self.max_u = mlp(in_dim, act_dim, hidden_dims, 0.1), max_u
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def dist(self, x):
        std = self.log_std.clamp(min=np.log(0.1)).exp()
        return torch.distributions.Normal(self.max_u * torch.tanh(self.net(x)), std)

    def log_prob(self, x, a):
        return self.dist(x).log_prob(a).sum(-1)

    def act(self, x, greedy):
        d = self.dist(x)
        return d.mean if greedy else d.sample()


def rollout(vec_env, policy, o_norm, g_norm, T, device, greedy):
    """One episode in each env (reset together, stepped in lockstep; nothing is stored past an episode's end).
    Returns the episodes' arrays, log pi~(a_t | s_t, g) of each stored action, and the success statistics."""
    n = vec_env.num_envs
    ob, _ = vec_env.reset()
    obs = np.zeros((n, T + 1, ob["observation"].shape[-1]), np.float32)
    ag = np.zeros((n, T + 1, ob["achieved_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T, *vec_env.single_action_space.shape), np.float32)
    logp = np.zeros((n, T), np.float32)
    g = ob["desired_goal"].copy()  # one goal per episode
    ep_len, success, reached, ret = np.full(n, T), np.zeros(n), np.zeros(n), np.zeros(n)
    running = np.ones(n, bool)
    obs[:, 0], ag[:, 0] = ob["observation"], ob["achieved_goal"]
    for t in range(T):
        x = torch.as_tensor(np.concatenate([o_norm(ob["observation"]), g_norm(g)], -1), device=device)
        with torch.no_grad():
            a = policy.act(x, greedy)
            logp[:, t] = policy.log_prob(x, a).cpu().numpy()
        a = a.cpu().numpy()
        env_a = np.clip(a, -policy.max_u, policy.max_u) if isinstance(policy, GaussianPolicy) else a
        ob, r, terminated, truncated, info = vec_env.step(env_a)
        actions[:, t], obs[:, t + 1], ag[:, t + 1] = a, ob["observation"], ob["achieved_goal"]
        ret += r * running
        success = np.where(running, info["is_success"], success)  # success at the episode's final step
        reached = np.where(running, np.maximum(reached, info["is_success"]), reached)  # at any step
        ended = running & (terminated | (t == T - 1))
        ep_len[ended & terminated] = t + 1
        running &= ~ended
        if not running.any():
            break
    return obs, ag, g, actions, logp, ep_len, success, reached, ret


def hgf(candidates, desired, n, rng):
    """Hindsight Goal Filtering (Alg. 2, the authors' code): keep the candidates inside the bounding box of the
    batch's real goals (on the dimensions where they vary), top up with the outside ones nearest the real goals'
    mean, then pick n of them by farthest-point sampling from a random first one."""
    real = np.unique(np.round(desired, 2), axis=0)
    lo, hi = real.min(0), real.max(0)
    dims = lo != hi
    inside = np.all((candidates[:, dims] >= lo[dims]) & (candidates[:, dims] <= hi[dims]), 1)
    pool, rest = candidates[inside], candidates[~inside]
    if len(pool) < n and len(rest):
        nearest = np.argsort(np.linalg.norm(rest - real.mean(0), axis=1), kind="stable")[: n - len(pool)]
        pool = np.concatenate([pool, rest[nearest]])
    chosen = [int(rng.integers(len(pool)))]
    dist = np.linalg.norm(pool - pool[chosen[0]], axis=1)
    for _ in range(min(n, len(pool)) - 1):  # max-min distance to the goals chosen so far
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(pool - pool[chosen[-1]], axis=1))
    return pool[chosen]


def hindsight_goals(ag, ep_len, g, args, rng):
    """G: the batch's unique achieved goals ag_{t+1} (rounded to 2 decimals); all of them (n_goals 0), or n_goals
    chosen by HGF or at random."""
    T = ag.shape[1] - 1
    achieved = ag[:, 1:][np.arange(T)[None] < ep_len[:, None]]
    candidates = np.unique(np.round(achieved, 2), axis=0)
    if args.n_goals == 0 or len(candidates) <= args.n_goals and not args.hgf:
        return candidates
    if args.hgf:
        return hgf(candidates, g, args.n_goals, rng)
    return candidates[rng.choice(len(candidates), args.n_goals, replace=False)]


def relabel(ag, ep_len, goals, env, T_max, dense=False, pairs=None):
    """Replay each episode i under each goal j (Sec. 2.3). ag [N, T+1, d], goals [M, d]; pairs [N, M] says which
    (episode, goal) pairs to build (default all). Returns valid [N, M, T] (step t kept), the rewards r' and the
    terminal flags done', all [N, M, T], and the kept pairs [N, M]."""
    T = ag.shape[1] - 1
    ag_next, g = np.broadcast_arrays(ag[:, None, 1:], goals[None, :, None])  # [N, M, T, d]
    in_episode = np.arange(T)[None, None] < ep_len[:, None, None]
    hit = (env.compute_reward(ag_next, g, None) == 0) & in_episode
    any_hit = hit.any(2)
    L = np.where(any_hit, hit.argmax(2) + 1, ep_len[:, None])  # truncate after the first success
    keep = (L > 1) if pairs is None else pairs & (L > 1)  # g' reached by the first action: pair dropped
    t = np.arange(T)[None, None]
    valid = keep[..., None] & (t < L[..., None])
    done = valid & (t == L[..., None] - 1)
    if dense:
        reward = -np.linalg.norm(ag_next - g, axis=-1)
    else:  # 0 everywhere, T_max - L + 1 at the success step: larger the sooner g' is reached
        reward = np.where(done & any_hit[..., None], T_max - L[..., None] + 1, 0.0)
    return valid, (reward * valid).astype(np.float32), done.astype(np.float32), keep


def importance_weights(logp_new, logp_orig, valid, weighted=True):
    """Per-decision ratios rho_ijt = exp(sum_{k <= t} (log pi~(a_k | s_k, g'_j) - log pi~(a_k | s_k, g_i))), 0 on
    dropped steps; weighted IS divides by their sum over episodes for each goal j and step t. Shapes [N, M, T]."""
    log_rho = np.cumsum((logp_new - logp_orig[:, None]) * valid, axis=2)
    rho = (np.exp(np.clip(log_rho, -50, 50)) + 1e-10) * valid  # clip the exponent; the 1e-10 avoids 0 / 0
    if not weighted:
        return rho
    total = rho.sum(0, keepdims=True)
    return np.divide(rho, total, out=np.zeros_like(rho), where=total > 0)


def flat_grad(y, params, **kwargs):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(y, params, **kwargs)])


def conjugate_gradient(Avp, b, iters=10, residual_tol=1e-10):
    """Solve A x = b for symmetric positive definite A given only x -> A x (x0 = 0)."""
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = r @ r
        if rr_new < residual_tol:
            break
        p, rr = r + rr_new / rr * p, rr_new
    return x


def trust_region_step(policy, batch, args, rng):
    """Maximise the surrogate within K(theta) <= delta (App. D.2): CG on the Hessian of K, scale to the boundary,
    backtrack. Returns (K after the step, the step fraction taken (0: rolled back), surrogate improvement, the
    parameter step's norm)."""
    x, a, logp_old, adv_w, kl_w = batch
    params = [p for p in policy.parameters()]

    def surrogate():
        return (torch.exp(policy.log_prob(x, a) - logp_old) * adv_w).mean()  # Eq. (79)

    def kl(idx=slice(None), scale=1.0):  # Eq. (80): QKL, or the plain log-ratio estimate for the ablation
        d = logp_old[idx] - policy.log_prob(x[idx], a[idx])
        return scale * (kl_w[idx] * (0.5 * d**2 if args.qkl else d)).sum()

    loss = surrogate()
    g = flat_grad(loss, params)
    n = len(x)
    idx = torch.as_tensor(rng.choice(n, max(1, int(args.fvp_subsample * n)), replace=False), device=x.device)
    scale = n / len(idx)

    def hessian_vector(v):  # (H + c I) v by double backpropagation through K on the subsample
        grad_kl = flat_grad(kl(idx, scale), params, create_graph=True)
        return flat_grad(grad_kl @ v, params) + args.cg_damping * v

    step_dir = conjugate_gradient(hessian_vector, g, args.cg_iters)
    shs = 0.5 * step_dir @ hessian_vector(step_dir)
    old = nn.utils.parameters_to_vector(params).detach()
    if not shs > 0:  # possible only with the log-ratio estimate, whose Hessian need not be PSD
        return kl().item(), 0.0, 0.0, 0.0
    step = torch.sqrt(args.max_kl / shs) * step_dir  # K ~ 1/2 s'Hs = delta at the full step
    expected, L0 = (g @ step).item(), loss.item()
    with torch.no_grad():
        for k in range(10):  # backtracking line search, factor 0.5
            nn.utils.vector_to_parameters(old + 0.5**k * step, params)
            improvement, K = surrogate().item() - L0, kl().item()
            if improvement > 0 and improvement / (0.5**k * expected) > 0.1 and 0 < K < 1.5 * args.max_kl:
                return K, 0.5**k, improvement, 0.5**k * step.norm().item()
        nn.utils.vector_to_parameters(old, params)  # roll back
    return 0.0, 0.0, 0.0, 0.0


def build_batch(obs, ag, g, actions, logp, ep_len, policy, critic, o_norm, g_norm, env, T_max, gamma, args, rng,
                device):
    """The hindsight batch (Alg. 3): goals, relabelled rewards, frozen log pi~(a | s, g'), IS weights, TD(0)
    advantages. Returns the policy batch, the critic's inputs and targets, and statistics."""
    if args.algo == "trpo":  # no hindsight: episode i under its own goal only
        goals, pairs = g, np.eye(len(ep_len), dtype=bool)
    else:
        goals, pairs = hindsight_goals(ag, ep_len, g, args, rng), None
    valid, reward, done, keep = relabel(ag, ep_len, goals, env, T_max, args.dense, pairs)
    i, j, t = np.nonzero(valid)
    o, o2, gg = o_norm(obs[i, t]), o_norm(obs[i, t + 1]), g_norm(goals[j])
    x = torch.as_tensor(np.concatenate([o, gg], -1), device=device)
    x2 = torch.as_tensor(np.concatenate([o2, gg], -1), device=device)
    a = torch.as_tensor(actions[i, t], device=device)
    with torch.no_grad():  # log pi~(a_t | s_t, g'_j) with the rollout parameters: fixed for the whole update
        logp_new = policy.log_prob(x, a)
        v, v2 = critic(x).squeeze(-1), critic(x2).squeeze(-1)
    dense_logp = np.zeros(valid.shape, np.float32)
    dense_logp[i, j, t] = logp_new.cpu().numpy()
    w = importance_weights(dense_logp, logp, valid, args.weighted_is)[i, j, t]
    r, d = [torch.as_tensor(arr[i, j, t], device=device) for arr in (reward, done)]
    target = r + gamma * (1 - d) * v2  # TD(0); time-outs count as terminal, as in the authors' code
    adv = target - v
    adv = (adv - adv.mean()) / (adv.std() + 1e-10) if len(adv) > 1 else adv * 0
    discount = torch.as_tensor(gamma**t, device=device, dtype=torch.float32)
    w = torch.as_tensor(w, device=device, dtype=torch.float32)
    n_pairs = max(int(keep.sum()), 1)
    policy_batch = (x, a, logp_new, discount * w * adv, (1 - gamma) / n_pairs * discount * w)
    w_all = w / w.sum()
    stats = {"hindsight_goals": len(goals), "samples": len(i), "pairs": n_pairs,
             "ess": (1 / (w_all**2).sum()).item() if len(w) else 0.0, "max_weight": w.max().item() if len(w) else 0.0}
    return policy_batch, (x, target), stats


def evaluate(vec_env, policy, o_norm, g_norm, T, device, n_episodes):
    """Greedy policy; returns (success at the final step, reached at any step, mean env return)."""
    successes, reached, returns = [], [], []
    while len(successes) < n_episodes:
        *_, success, reach, ret = rollout(vec_env, policy, o_norm, g_norm, T, device, True)
        successes += list(success)
        reached += list(reach)
        returns += list(ret)
    return [float(np.mean(v[:n_episodes])) for v in (successes, reached, returns)]


def make_env(args, **kwargs):
    return envs.make(args.env, discrete=args.discrete, **kwargs)


def make_vec_env(args, n):
    return gym.vector.SyncVectorEnv([lambda: make_env(args) for _ in range(n)])


def make_policy(env, args):
    in_dim = env.observation_space["observation"].shape[0] + env.observation_space["desired_goal"].shape[0]
    if isinstance(env.action_space, gym.spaces.Discrete):
        return CategoricalPolicy(in_dim, int(env.action_space.n), args.hidden_dims)
    return GaussianPolicy(in_dim, env.action_space.shape[0], args.hidden_dims, float(env.action_space.high[0]))


def check_env(env, args):
    """One-line errors for envs and settings this script cannot handle."""
    space = env.action_space
    if isinstance(space, gym.spaces.Box):
        if not (np.all(space.high == space.high[0]) and np.all(space.low == -space.high)):
            raise envs.EnvError(f"{args.env}: the Gaussian policy here needs a symmetric action box, got {space}")
    elif not isinstance(space, gym.spaces.Discrete):
        raise envs.EnvError(f"{args.env} has {space} actions; HTRPO here needs Discrete or Box actions")
    ob_space = env.observation_space
    if ob_space["achieved_goal"].shape != ob_space["desired_goal"].shape:
        raise envs.EnvError(f"{args.env}: achieved and desired goals differ in shape, so they cannot be relabelled")
    goal = ob_space["desired_goal"].sample()[None]
    if env.unwrapped.compute_reward(goal, goal, None)[0] != 0:
        raise envs.EnvError(f"{args.env}: HTRPO needs a -1/0 sparse reward that is 0 on reaching the goal")
    for name in ("total_timesteps", "num_envs", "steps_per_iter", "eval_interval", "n_test_rollouts", "cg_iters",
                 "critic_iters"):
        if getattr(args, name) < 1:
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.n_goals < 0 or args.max_kl <= 0 or not 0 < args.fvp_subsample <= 1 or not 0 < args.gamma < 1:
        raise envs.EnvError("--n-goals must be >= 0, --max-kl > 0, --fvp-subsample in (0, 1], --gamma in (0, 1)")


def save_checkpoint(path, policy, o_norm, g_norm, args):
    torch.save({"policy": policy.state_dict(), "o_norm": o_norm.state_dict(), "g_norm": g_norm.state_dict(),
                "args": asdict(args)}, path)


def load_and_evaluate(args):
    """Evaluate a saved policy greedily over --n-test-rollouts episodes."""
    if not os.path.isfile(args.eval_checkpoint):
        raise envs.EnvError(f"no checkpoint at {args.eval_checkpoint}")
    ckpt = torch.load(args.eval_checkpoint, map_location="cpu", weights_only=False)
    saved = Args(**ckpt["args"])
    env = make_env(saved)
    policy = make_policy(env, saved)
    policy.load_state_dict(ckpt["policy"])
    o_norm, g_norm = Normalizer(env.observation_space["observation"].shape[0]), Normalizer(
        env.observation_space["desired_goal"].shape[0])
    o_norm.load_state_dict(ckpt["o_norm"])
    g_norm.load_state_dict(ckpt["g_norm"])
    vec_env = make_vec_env(saved, saved.num_envs)
    vec_env.reset(seed=args.seed)
    sr, reached, ret = evaluate(vec_env, policy, o_norm, g_norm, envs.horizon(env), "cpu", args.n_test_rollouts)
    print(f"{saved.env}: success rate {sr:.3f}, mean return {ret:.2f} over {args.n_test_rollouts} episodes "
          f"(reached at any step {reached:.3f})")
    vec_env.close()
    return sr


def main(args):
    if args.eval_checkpoint:
        return load_and_evaluate(args)
    # seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    rng = np.random.default_rng(args.seed)

    # envs: one in this process for the spaces and the vectorised reward, num_envs for collecting
    env = make_env(args)
    fill_defaults(args, env)
    check_env(env, args)
    T = envs.horizon(env)
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=args.seed)

    # policy, critic V(s, g), normalisers (identity when --normalize is off)
    policy = make_policy(env, args).to(device)
    critic = mlp(obs_dim + goal_dim, 1, args.hidden_dims, 1.0).to(device)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr_critic)
    policy_opt = torch.optim.Adam(policy.parameters(), lr=args.lr_policy) if args.algo == "hpg" else None
    clip_range = 5.0 if args.normalize else np.inf
    o_norm, g_norm = Normalizer(obs_dim, clip_range=clip_range), Normalizer(goal_dim, clip_range=clip_range)

    run_name = f"{args.env.replace(':', '_').replace(',', '_')}__htrpo_{args.algo}__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    ckpt_path = f"runs/{run_name}/htrpo.pt"

    global_step, grad_steps, epoch, start_time, sr = 0, 0, 0, time.time(), 0.0
    seconds = {"simulate": 0.0, "relabel": 0.0, "optimise": 0.0}  # where the training time goes
    try:
        while global_step < args.total_timesteps:
            # 1. collect whole episodes with the stochastic policy until the batch holds steps_per_iter env steps
            tic = time.perf_counter()
            episodes, steps = [], 0
            while steps < args.steps_per_iter:
                episodes.append(rollout(vec_env, policy, o_norm, g_norm, T, device, False))
                steps += int(episodes[-1][5].sum())
            obs, ag, g, actions, logp, ep_len, success, _, _ = [np.concatenate(x) for x in zip(*episodes)]
            global_step += steps
            writer.add_scalar("charts/success_rate", success.mean(), global_step)
            seconds["simulate"] += time.perf_counter() - tic

            # 2. the hindsight batch: goals (HGF), relabelled rewards, IS weights, TD(0) advantages
            tic = time.perf_counter()
            policy_batch, (x_v, target_v), stats = build_batch(obs, ag, g, actions, logp, ep_len, policy, critic,
                                                               o_norm, g_norm, env.unwrapped, T, args.gamma, args,
                                                               rng, device)
            seconds["relabel"] += time.perf_counter() - tic

            # 3. policy step (trust region, or Adam for HPG), then the critic, then the normalisers
            tic = time.perf_counter()
            if stats["samples"] > 1:
                if args.algo == "hpg":
                    x, a, logp_old, adv_w, _ = policy_batch
                    loss = -(torch.exp(policy.log_prob(x, a) - logp_old) * adv_w).mean()
                    before = nn.utils.parameters_to_vector(policy.parameters()).detach()
                    policy_opt.zero_grad()
                    loss.backward()
                    policy_opt.step()
                    step_norm = (nn.utils.parameters_to_vector(policy.parameters()) - before).norm().item()
                    metrics = {"step_norm": step_norm}
                else:
                    kl_after, frac, improvement, step_norm = trust_region_step(policy, policy_batch, args, rng)
                    metrics = {"kl_estimate": kl_after, "step_fraction": frac,  # fraction 0: rolled back
                               "surrogate_improvement": improvement, "step_norm": step_norm}
                grad_steps += 1  # policy updates; the critic takes critic_iters steps on each batch
                for _ in range(args.critic_iters):
                    critic_loss = (critic(x_v).squeeze(-1) - target_v).pow(2).mean()
                    critic_opt.zero_grad()
                    critic_loss.backward()
                    critic_opt.step()
                metrics["critic_loss"] = critic_loss.item()
                for key, value in metrics.items():
                    writer.add_scalar(f"losses/{key}", value, global_step)
            for key, value in stats.items():
                writer.add_scalar(f"stats/{key}", value, global_step)
            if args.normalize:
                o_norm.update(obs[:, :-1][np.arange(T)[None] < ep_len[:, None]])
                g_norm.update(np.concatenate([g, ag[:, 1:].reshape(-1, goal_dim)]))
            seconds["optimise"] += time.perf_counter() - tic
            if global_step // args.eval_interval == (global_step - steps) // args.eval_interval and \
                    global_step < args.total_timesteps:
                continue

            # every eval_interval env steps and at the end: evaluate the greedy policy, log, checkpoint
            epoch += 1
            sr, reached, eval_ret = evaluate(vec_env, policy, o_norm, g_norm, T, device, args.n_test_rollouts)
            elapsed = time.time() - start_time
            sps = int(global_step / elapsed)
            writer.add_scalar("eval/success_rate", sr, global_step)
            writer.add_scalar("eval/reached_rate", reached, global_step)
            writer.add_scalar("eval/episodic_return", eval_ret, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("charts/gradient_steps", grad_steps, global_step)
            total = sum(seconds.values())
            for key, value in seconds.items():
                writer.add_scalar(f"time/{key}_share", value / total, global_step)
            left = elapsed / global_step * max(args.total_timesteps - global_step, 0)
            print(f"epoch {epoch:>3} | step {global_step:>8}/{args.total_timesteps} | success {sr:.2f} | "
                  f"reached {reached:.2f} | SPS {sps:>5} | {elapsed:5.0f}s elapsed, ~{left:.0f}s left", flush=True)
            if args.save_model:
                save_checkpoint(ckpt_path, policy, o_norm, g_norm, args)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}")
    finally:
        vec_env.close()
        env.close()
        writer.close()
    total = max(sum(seconds.values()), 1e-9)
    print("time shares: " + ", ".join(f"{k} {v / total:.0%}" for k, v in seconds.items()))
    if args.save_model:
        save_checkpoint(ckpt_path, policy, o_norm, g_norm, args)
        print(f"checkpoint: {ckpt_path}\nevaluate it: python htrpo.py --eval-checkpoint {ckpt_path}")
    return sr


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminated run saves like Ctrl-C does
    try:
        main(tyro.cli(Args))
    except envs.EnvError as e:
        sys.exit(f"error: {e}")
