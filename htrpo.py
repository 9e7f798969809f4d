# SPDX-License-Identifier: MIT -- docs: docs/htrpo.md
"""HTRPO: Hindsight Trust Region Policy Optimization (Zhang et al., IJCAI 2021), with its TRPO and HPG baselines.

Idea: TRPO is on-policy, so it cannot learn from an episode under a goal it was not collecting for, unless importance
sampling corrects the mismatch. HTRPO replays each batch under goals achieved in it, truncated at the new goal's first
success, weights each step by the per-decision ratio pi~(a | s, g') / pi~(a | s, g) and takes TRPO's step on them.
Equations implemented: goals by HGF (Alg. 2); r' = T_max - L + 1 at the first success L, else 0; weighted per-decision
IS (Eq. 12); one-step TD advantages (Sec. 3.2); surrogate (Eq. 79) under the hindsight QKL <= delta (Eq. 80), solved
by conjugate gradient and a line search (App. D.2). Deviations (docs/htrpo.md): delta 1e-3 (--paper: Tables 2-3);
Hessian-vector products on 20 % of the samples. Usage: python htrpo.py [--env FetchReach] [--discrete 3]"""

import os
import random
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from typing import List, Literal, NamedTuple, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

import envs

ALGO = "htrpo"


@dataclass
class Args:
    env: str = "BitFlip:n=8,start=zeros"
    """goal env with a sparse reward: a short name (BitFlip:n=8,start=zeros, FourRoomMaze, FetchReach, ...) or an id"""
    seed: int = 1
    """seed of random, numpy, torch and the envs"""
    total_timesteps: Optional[int] = None
    """training env steps, hindsight replays not counted (unset: 5k; 32k on FetchReach; 2M on the block tasks)"""
    num_envs: int = 4
    """envs stepped in lockstep while collecting and evaluating"""
    eval_interval: Optional[int] = None
    """env steps between evaluations (unset: 4 batches; 8k on FetchReach, 10k on block tasks); one more ends the run"""
    n_test_rollouts: Optional[int] = None
    """greedy evaluation episodes (unset: 50; 20 on Fetch)"""
    algo: Literal["htrpo", "trpo", "hpg"] = "htrpo"
    """HTRPO; TRPO without hindsight; or HPG (hindsight policy gradient: the same surrogate, no trust region)"""
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
    steps_per_iter: Optional[int] = None
    """env steps per batch, in whole episodes (unset: 16 n on n-bit BitFlip, 400 on Fetch, 256 elsewhere)"""
    n_goals: Optional[int] = None
    """hindsight goals per batch, N_g; 0: every achieved goal (unset: 0 on BitFlip <= 8 bits, 30 on Fetch, else 64)"""
    gamma: Optional[float] = None
    """discount (unset: 0.9 on BitFlip, 0.98 on Fetch, 0.95 elsewhere)"""
    max_kl: Optional[float] = None
    """trust-region size delta on the hindsight QKL (unset: 1e-3)"""
    cg_damping: Optional[float] = None
    """damping c added to the QKL Hessian in the conjugate gradient (unset: 1e-2 on BitFlip, 1e-3 elsewhere)"""
    fvp_subsample: float = 0.2
    """fraction of the hindsight samples used in the Hessian-vector products"""
    hidden_dims: Optional[List[int]] = None
    """tanh hidden layer widths of policy and critic (unset: 64 64)"""
    lr_critic: float = 5e-4
    """Adam learning rate of the critic V(s, g)"""
    critic_iters: Optional[int] = None
    """full-batch critic steps per batch (unset: 10; 20 on Fetch)"""
    lr_actor: float = 1e-3
    """Adam learning rate of the policy, --algo hpg only (htrpo and trpo take the trust-region step)"""
    normalize: Optional[bool] = None
    """running mean/std normalisation of observations and goals (unset: on for Fetch, off elsewhere)"""
    paper: bool = False
    """flags left unset take the paper's Tables 2-3: delta 2e-5, 3200 steps/iter (1600 discrete), N_g 100, 3 x 256"""
    save_model: bool = False
    """write policy, normalisers and args to runs/<run>/htrpo.pt after each evaluation and at the end"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint for --n-test-rollouts episodes instead of training"""
    torch_threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default, every core)"""
    cuda: bool = False
    """train on the GPU if one is available"""


# Defaults of the flags left unset, per env (docs/htrpo.md says how they were chosen)
ENV_DEFAULTS = {
    "default": dict(total_timesteps=5_000, n_test_rollouts=50, steps_per_iter=256, n_goals=64, gamma=0.95, max_kl=1e-3,
                    cg_damping=1e-3, hidden_dims=[64, 64], critic_iters=10, normalize=False),
    "BitFlip": dict(gamma=0.9, cg_damping=1e-2),  # and, for n bits, 16 n steps per batch, every goal up to n = 8
    "FetchReach": dict(total_timesteps=32_000, n_test_rollouts=20, steps_per_iter=400, n_goals=30, gamma=0.98,
                       critic_iters=20, normalize=True, eval_interval=8_000),
}
ENV_DEFAULTS["FetchPush"] = ENV_DEFAULTS["FetchSlide"] = ENV_DEFAULTS["FetchPickAndPlace"] = dict(
    ENV_DEFAULTS["FetchReach"], total_timesteps=2_000_000, eval_interval=10_000)
PAPER = dict(max_kl=2e-5, n_goals=100, gamma=0.98, cg_damping=1e-3, hidden_dims=[256, 256, 256], critic_iters=20)


def fill_defaults(args, env):
    """Set every flag left unset (None) to its per-env default, or with --paper to the paper's value."""
    name = envs.parse(args.env)[0].split("-v")[0]
    defaults = {**ENV_DEFAULTS["default"], **ENV_DEFAULTS.get(name, {})}
    if name == "BitFlip":
        defaults.update(steps_per_iter=16 * env.unwrapped.n, n_goals=0 if env.unwrapped.n <= 8 else 64)
    if args.paper:
        defaults.update(PAPER, steps_per_iter=1600 if isinstance(env.action_space, gym.spaces.Discrete) else 3200)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.eval_interval = 4 * args.steps_per_iter if args.eval_interval is None else args.eval_interval
    return args


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
        return {k: torch.as_tensor(getattr(self, k)) for k in ("sum", "sumsq", "count", "mean", "std")}

    def load_state_dict(self, state):
        self.sum, self.sumsq, self.mean, self.std = (state[k].numpy() for k in ("sum", "sumsq", "mean", "std"))
        self.count = int(state["count"])


def mlp(in_dim, out_dim, hidden_dims, activation=nn.ReLU):
    layers, dims = [], [in_dim, *hidden_dims]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


def orthogonal_init(net, out_gain):
    """The authors' init: orthogonal weights with gain sqrt 2 (out_gain on the last layer), zero biases."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for layer in linears:
        nn.init.orthogonal_(layer.weight, out_gain if layer is linears[-1] else np.sqrt(2))
        nn.init.zeros_(layer.bias)
    return net


class Policy(nn.Module):
    """pi(a | s, g), tanh MLP([s, g]). Discrete: (softmax + 0.01 / n) / 1.01, the authors' smoothing (finite ratios).
    Box: N(max_u tanh(MLP), sigma^2), one log sigma per dimension from sigma = 1, floored at 0.1; env sees a clipped."""

    def __init__(self, in_dim, action_space, hidden_dims):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.n = int(action_space.n) if self.discrete else action_space.shape[0]
        self.net = orthogonal_init(mlp(in_dim, self.n, hidden_dims, nn.Tanh), 0.1)
        if not self.discrete:
            self.max_u, self.log_std = float(action_space.high[0]), nn.Parameter(torch.zeros(self.n))

    def dist(self, x):
        if self.discrete:
            return torch.distributions.Categorical((torch.softmax(self.net(x), -1) + 0.01 / self.n) / 1.01)
        std = self.log_std.clamp(min=np.log(0.1)).exp()
        return torch.distributions.Normal(self.max_u * torch.tanh(self.net(x)), std)

    def log_prob(self, x, a):
        logp = self.dist(x).log_prob(a)
        return logp if self.discrete else logp.sum(-1)


def flat_grad(y, params, **kwargs):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(y, params, **kwargs)])


def conjugate_gradient(Avp, b, iters=10, residual_tol=1e-10):
    """Solve A x = b for symmetric positive definite A given only x -> A x (x0 = 0)."""
    x, r, p, rr = torch.zeros_like(b), b.clone(), b.clone(), b @ b
    for _ in range(iters):
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        if (rr_new := r @ r) < residual_tol:
            break
        p, rr = r + rr_new / rr * p, rr_new
    return x


# ---- HTRPO: what differs from her_ddpg.py ----
# On-policy, no replay buffer: each batch is relabelled, weighted by importance ratios, and used for one policy step.

def hgf(candidates, desired, n, rng):
    """Hindsight Goal Filtering (Alg. 2, as HTRPOCODES/HTRPO-v2, agents/HTRPO.py reads it): the candidates in the real
    goals' box (on their varying dims), topped up with the outside ones nearest their mean; then n, farthest-first."""
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


def relabel(ag, ep_len, goals, env, T_max, r_success, dense=False, pairs=None):
    """Replay episode i (ag [N, T+1, d]) under goal j (goals [M, d]) for the pairs [N, M] given (default all); r_success
    is the env's reward on success. Returns valid (step t kept), r' and done', all [N, M, T], and the kept pairs."""
    T = ag.shape[1] - 1
    ag_next, g = np.broadcast_arrays(ag[:, None, 1:], goals[None, :, None])  # [N, M, T, d]
    t = np.arange(T)[None, None]
    hit = (env.compute_reward(ag_next, g, None) == r_success) & (t < ep_len[:, None, None])
    any_hit = hit.any(2)
    L = np.where(any_hit, hit.argmax(2) + 1, ep_len[:, None])  # truncate after the first success
    keep = (L > 1) if pairs is None else pairs & (L > 1)  # g' reached by the first action: pair dropped
    valid = keep[..., None] & (t < L[..., None])
    done = valid & (t == L[..., None] - 1)
    if dense:
        reward = -np.linalg.norm(ag_next - g, axis=-1)
    else:  # Sec. 5.1's "purely sparse" reward: 0, then T_max - L + 1 at the success step (the authors' code's value)
        reward = np.where(done & any_hit[..., None], T_max - L[..., None] + 1, 0.0)
    return valid, (reward * valid).astype(np.float32), done.astype(np.float32), keep


def importance_weights(logp_new, logp_orig, valid, weighted=True, floor=1e-10):
    """Per-decision ratios rho_ijt = exp(sum_{k <= t} (log pi~(a_k | s_k, g'_j) - log pi~(a_k | s_k, g_i))) (Eq. 12),
    0 on dropped steps; weighted IS: (rho + floor) / its sum over episodes, per goal j and step t. Shapes [N, M, T]."""
    log_rho = np.where(valid, np.cumsum((logp_new - logp_orig[:, None]) * valid, axis=2, dtype=np.float64), -np.inf)
    if not weighted:  # raw ratios: clip the exponent so that exp stays finite
        return np.exp(np.clip(log_rho, -50, 50)) * valid
    m = np.where(valid.any(0), log_rho.max(0), 0.0)  # a factor e^-m per (j, t) changes no weight; exp cannot overflow
    rho = (np.exp(log_rho - m) + floor * np.exp(np.minimum(-m, 700.0))) * valid  # floor: the authors' HPG_Gaussian.py
    return rho / np.maximum(rho.sum(0, keepdims=True), 1.0)  # the sum is >= 1 where a step is kept, else rho = 0


# One sample per kept step of every (episode, goal) pair; logp_old = log pi~(a | s, g'), pairs = lambda
Batch = NamedTuple("Batch", [(k, torch.Tensor) for k in ("obs", "actions", "rewards", "next_obs", "g", "dones",
                                                          "logp_old", "weights", "steps")] + [("pairs", int)])


def build_batch(ep, policy, o_norm, g_norm, env, T_max, r_success, args, rng, device):
    """The hindsight batch of Alg. 3 and its statistics. Goals: the batch's unique achieved goals ag_{t+1} (rounded to
    2 decimals), all of them (n_goals 0) or n_goals picked by HGF or at random; --algo trpo: each episode's own."""
    goals, pairs = ep.g, np.eye(len(ep.ep_len), dtype=bool)
    if args.algo != "trpo":
        achieved = ep.ag[:, 1:][np.arange(ep.logp.shape[1]) < ep.ep_len[:, None]]  # ag_1 .. ag_L of each episode
        goals, pairs = np.unique(np.round(achieved, 2), axis=0), None
        if args.n_goals and args.hgf:
            goals = hgf(goals, ep.g, args.n_goals, rng)
        elif args.n_goals and len(goals) > args.n_goals:
            goals = goals[rng.choice(len(goals), args.n_goals, replace=False)]
    valid, reward, done, keep = relabel(ep.ag, ep.ep_len, goals, env, T_max, r_success, args.dense, pairs)
    i, j, t = np.nonzero(valid)
    obs, next_obs, g, a = (torch.as_tensor(v, device=device) for v in
                           (o_norm(ep.obs[i, t]), o_norm(ep.obs[i, t + 1]), g_norm(goals[j]), ep.actions[i, t]))
    with torch.no_grad():  # log pi~(a_t | s_t, g'_j) with the rollout parameters
        logp_new = policy.log_prob(torch.cat([obs, g], -1), a)
    dense_logp = np.zeros(valid.shape, np.float32)
    dense_logp[i, j, t] = logp_new.cpu().numpy()
    w = importance_weights(dense_logp, ep.logp, valid, args.weighted_is)[i, j, t]
    r, d, w_t = (torch.as_tensor(v, device=device, dtype=torch.float32) for v in (reward[i, j, t], done[i, j, t], w))
    batch = Batch(obs, a, r, next_obs, g, d, logp_new, w_t, torch.as_tensor(t, device=device), max(int(keep.sum()), 1))
    ess, w_max = (float(w.sum() ** 2 / (w**2).sum()), float(w.max())) if len(w) else (0.0, 0.0)  # ESS = 1 / sum w'^2
    return batch, dict(hindsight_goals=len(goals), samples=len(i), pairs=batch.pairs, ess=ess, max_weight=w_max)


def update(batch, policy, critic, policy_opt, critic_opt, args, rng):
    """TD(0) advantages with the current critic; the policy maximises the surrogate within K <= delta (App. D.2: CG on
    the Hessian of K, scaled to the boundary, a backtracking line search; HPG: one Adam step); the critic's fit."""
    x, x2, a = torch.cat([batch.obs, batch.g], -1), torch.cat([batch.next_obs, batch.g], -1), batch.actions
    with torch.no_grad():  # time-outs count as terminal, as in the authors' code
        target = batch.rewards + args.gamma * (1 - batch.dones) * critic(x2).squeeze(-1)
        adv = target - critic(x).squeeze(-1)
    discount = torch.as_tensor(args.gamma ** batch.steps.cpu().numpy(), dtype=torch.float32, device=x.device)
    adv_w = discount * batch.weights * ((adv - adv.mean()) / (adv.std() + 1e-10))  # A standardised over the batch
    # (1 - gamma): the authors' code's (HTRPOCODES/HTRPO-v2, agents/HTRPO.py, mean_kl_divergence), not Eq. (80)'s
    kl_w = (1 - args.gamma) / batch.pairs * discount * batch.weights
    params, old = list(policy.parameters()), nn.utils.parameters_to_vector(policy.parameters()).detach()

    def surrogate():
        return (torch.exp(policy.log_prob(x, a) - batch.logp_old) * adv_w).mean()  # Eq. (79)

    def kl(idx=slice(None), scale=1.0):  # Eq. (80): QKL, or the plain log-ratio estimate for the ablation
        d = batch.logp_old[idx] - policy.log_prob(x[idx], a[idx])
        return scale * (kl_w[idx] * (0.5 * d**2 if args.qkl else d)).sum()

    def hessian_vector(v):  # (H + c I) v by double backpropagation through K on the subsample idx
        grad_kl = flat_grad(kl(idx, len(x) / len(idx)), params, create_graph=True)
        return flat_grad(grad_kl @ v, params) + args.cg_damping * v

    losses = {} if args.algo == "hpg" else dict.fromkeys(("kl_estimate", "step_fraction", "surrogate_improvement"), 0.0)
    if args.algo == "hpg":
        policy_opt.zero_grad()
        (-surrogate()).backward()
        policy_opt.step()
    else:
        loss = surrogate()
        g = flat_grad(loss, params)
        idx = torch.as_tensor(rng.choice(len(x), max(1, int(args.fvp_subsample * len(x))), replace=False))
        step_dir = conjugate_gradient(hessian_vector, g)  # 10 iterations, as the authors' code
        shs = 0.5 * step_dir @ hessian_vector(step_dir)  # <= 0 only with the log-ratio estimate (Hessian not PSD)
        step = torch.sqrt(args.max_kl / shs) * step_dir if shs > 0 else 0 * step_dir  # K ~ 1/2 s'Hs = delta
        expected, L0 = (g @ step).item(), loss.item()
        with torch.no_grad():
            for frac in [0.5**k for k in range(10)]:  # backtracking line search; step fraction 0: rolled back
                nn.utils.vector_to_parameters(old + frac * step, params)
                improvement, K = surrogate().item() - L0, kl().item()
                if improvement > 0 and improvement / (frac * expected) > 0.1 and 0 < K < 1.5 * args.max_kl:
                    losses = dict(kl_estimate=K, step_fraction=frac, surrogate_improvement=improvement)
                    break
            else:
                nn.utils.vector_to_parameters(old, params)  # roll back
    losses["step_norm"] = (nn.utils.parameters_to_vector(params) - old).norm().item()
    for _ in range(args.critic_iters):  # full-batch fit to the targets of the critic before the update
        critic_loss = (critic(x).squeeze(-1) - target).pow(2).mean()
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_opt.step()
    return {**losses, "critic_loss": critic_loss.item()}
# ---- end ----


# rollout's episodes: g [n, dim], one goal each; actions unclipped; logp [n, T] = log pi~(a_t | s_t, g); reached: ever
Episodes = NamedTuple("Episodes", [(k, np.ndarray) for k in ("obs", "ag", "g", "actions", "ep_len", "success", "ret",
                                                              "logp", "reached")])


def rollout(vec_env, policy, o_norm, g_norm, T, device, *, explore):
    """One episode in each env (reset together, stepped in lockstep; steps past ep_len hold zeros or auto-resets)."""
    n, (ob, _) = vec_env.num_envs, vec_env.reset()
    obs, ag = (np.zeros((n, T + 1, ob[k].shape[-1]), np.float32) for k in ("observation", "achieved_goal"))
    actions = np.zeros((n, T, *vec_env.single_action_space.shape), np.float32)
    logp, g, running = np.zeros((n, T), np.float32), ob["desired_goal"].copy(), np.ones(n, bool)
    ep_len, success, reached, ret = np.full(n, T), np.zeros(n), np.zeros(n), np.zeros(n)
    obs[:, 0], ag[:, 0] = ob["observation"], ob["achieved_goal"]
    for t in range(T):
        x = torch.as_tensor(np.concatenate([o_norm(ob["observation"]), g_norm(g)], -1), device=device)
        with torch.no_grad():  # explore: sample from the policy; else its mode
            d = policy.dist(x)
            a = d.sample() if explore else d.probs.argmax(-1) if policy.discrete else d.mean
            logp[:, t], a = policy.log_prob(x, a).cpu().numpy(), a.cpu().numpy()
        ob, r, terminated, _, info = vec_env.step(a if policy.discrete else np.clip(a, -policy.max_u, policy.max_u))
        actions[:, t], obs[:, t + 1], ag[:, t + 1] = a, ob["observation"], ob["achieved_goal"]
        ret += r * running
        success = np.where(running, info["is_success"], success)  # success at the episode's final step
        reached = np.where(running, np.maximum(reached, info["is_success"]), reached)
        ep_len[running & terminated] = t + 1  # else T: the loop ends there
        running &= ~terminated
        if not running.any():
            break
    return Episodes(obs, ag, g, actions, ep_len, success, ret, logp, reached)


def update_normalizers(o_norm, g_norm, ep):
    """Add s_0 .. s_{L-1}, g and ag_1 .. ag_L of each episode, skipping steps past its length L (zeros or resets)."""
    kept = np.arange(ep.logp.shape[1]) < ep.ep_len[:, None]
    o_norm.update(ep.obs[:, :-1][kept])
    g_norm.update(np.concatenate([ep.g, ep.ag[:, 1:][kept]]))


def evaluate(vec_env, policy, o_norm, g_norm, T, device, n_episodes):
    """Greedy policy; returns (success at the final step, mean env return, reached at any step)."""
    eps = [rollout(vec_env, policy, o_norm, g_norm, T, device, explore=False)
           for _ in range(-(-n_episodes // vec_env.num_envs))]  # ceil(n_episodes / num_envs) rounds of num_envs
    ep = Episodes(*map(np.concatenate, zip(*eps)))
    return [float(v[:n_episodes].mean()) for v in (ep.success, ep.ret, ep.reached)]


def make_env(args, **kwargs):
    return envs.make(args.env, discrete=args.discrete, **kwargs)


def make_vec_env(args, n):
    return gym.vector.SyncVectorEnv([lambda: make_env(args) for _ in range(n)])


def make_networks(env, args, device):
    """Policy, critic V(s, g) and the observation and goal normalisers (identity with --normalize off)."""
    dims = [env.observation_space[k].shape[0] for k in ("observation", "desired_goal")]
    policy = Policy(sum(dims), env.action_space, args.hidden_dims).to(device)
    critic = orthogonal_init(mlp(sum(dims), 1, args.hidden_dims, nn.Tanh), 1.0).to(device)
    return policy, critic, *(Normalizer(d, clip_range=5.0 if args.normalize else np.inf) for d in dims)


def check_env(env, args):
    """One-line errors for envs and settings this script cannot handle; returns the env's (r_fail, r_success)."""
    space = env.action_space
    box = isinstance(space, gym.spaces.Box) and np.all(space.high == space.high[0]) and np.all(space.low == -space.high)
    if not (box or isinstance(space, gym.spaces.Discrete)):
        raise envs.EnvError(f"{args.env} has {space} actions; HTRPO here needs Discrete ones or a symmetric Box")
    if len(shapes := {env.observation_space[k].shape for k in ("achieved_goal", "desired_goal")}) > 1 or None in shapes:
        raise envs.EnvError(f"{args.env}: its goals are not arrays of one shape, so they cannot be relabelled")
    for name in ("total_timesteps", "num_envs", "steps_per_iter", "eval_interval", "n_test_rollouts", "critic_iters"):
        if getattr(args, name) < 1:
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.n_goals < 0 or args.max_kl <= 0 or not 0 < args.fvp_subsample <= 1 or not 0 < args.gamma < 1:
        raise envs.EnvError("--n-goals must be >= 0, --max-kl > 0, --fvp-subsample in (0, 1], --gamma in (0, 1)")
    return envs.sparse_rewards(env)  # HTRPO's own reward (relabel) needs the env's on success; dense ones are refused


def save_checkpoint(path, policy, o_norm, g_norm, args):
    """Tensors and plain types only, so loading needs no code from the file (weights_only=True)."""
    torch.save({"algo": ALGO, "policy": policy.state_dict(), "o_norm": o_norm.state_dict(),
                "g_norm": g_norm.state_dict(), "args": asdict(args)}, path)


def load_checkpoint(path):
    """A checkpoint this file wrote, loaded without running code from it; anything else is a one-line error."""
    if not os.path.isfile(path):
        raise envs.EnvError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # a foreign pickle may make torch warn before it refuses it
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # refuses pickled code
    except Exception as e:
        raise envs.EnvError(f"{path} is not a {ALGO}.py checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("algo") != ALGO:
        raise envs.EnvError(f"{path} is not a {ALGO}.py checkpoint")
    return ckpt


def load_and_evaluate(args):
    """Evaluate a saved policy greedily over --n-test-rollouts episodes (unset: the run's own number)."""
    ckpt = load_checkpoint(args.eval_checkpoint)
    saved = Args(**ckpt["args"])
    env = make_env(saved)
    policy, _, o_norm, g_norm = make_networks(env, saved, "cpu")
    for net, key in ((policy, "policy"), (o_norm, "o_norm"), (g_norm, "g_norm")):
        net.load_state_dict(ckpt[key])
    vec_env = make_vec_env(saved, saved.num_envs)
    vec_env.reset(seed=args.seed)
    n = args.n_test_rollouts or saved.n_test_rollouts
    sr, ret, reached = evaluate(vec_env, policy, o_norm, g_norm, envs.horizon(env), "cpu", n)
    print(f"{saved.env}: success rate {sr:.3f}, mean return {ret:.2f} over {n} episodes (reached {reached:.3f})")
    vec_env.close()
    return sr


def main(args):
    if args.eval_checkpoint:
        return load_and_evaluate(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    rng = np.random.default_rng(args.seed)

    # envs: one in this process for the spaces and the vectorised reward, num_envs for collecting
    env = make_env(args)
    r_success = check_env(env, fill_defaults(args, env))[1]  # the env's reward on success, which relabel looks for
    T = envs.horizon(env)
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=args.seed)

    # policy, critic V(s, g), optimisers, normalisers (identity when --normalize is off)
    policy, critic, o_norm, g_norm = make_networks(env, args, device)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr_critic)
    policy_opt = torch.optim.Adam(policy.parameters(), lr=args.lr_actor) if args.algo == "hpg" else None

    run_dir = f"runs/{args.env.replace(':', '_').replace(',', '_')}__{ALGO}_{args.algo}__{args.seed}__{time.time():.0f}"
    ckpt_path = f"{run_dir}/{ALGO}.pt"
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    print(f"{ALGO} | {env.spec.id} | {args.total_timesteps:,} env steps | seed {args.seed} | run {run_dir} | "
          "tensorboard --logdir runs", flush=True)

    global_step, grad_steps, start_time, sr = 0, 0, time.time(), 0.0
    try:
        while global_step < args.total_timesteps:
            # collect whole episodes with the stochastic policy until the batch holds steps_per_iter env steps
            episodes, steps = [], 0
            while steps < args.steps_per_iter:
                episodes.append(rollout(vec_env, policy, o_norm, g_norm, T, device, explore=True))
                steps += int(episodes[-1].ep_len.sum())
            ep = Episodes(*map(np.concatenate, zip(*episodes)))
            global_step += steps
            writer.add_scalar("charts/success_rate", ep.success.mean(), global_step)

            # relabel, then update the policy and the critic, then the normalisers (frozen until now)
            batch, stats = build_batch(ep, policy, o_norm, g_norm, env.unwrapped, T, r_success, args, rng, device)
            if stats["samples"] > 1:
                losses = update(batch, policy, critic, policy_opt, critic_opt, args, rng)
                grad_steps += 1  # policy updates; the critic takes critic_iters steps on each batch
                for key, value in losses.items():
                    writer.add_scalar(f"losses/{key}", value, global_step)
            for key, value in stats.items():
                writer.add_scalar(f"stats/{key}", value, global_step)
            if args.normalize:
                update_normalizers(o_norm, g_norm, ep)
            if global_step // args.eval_interval == (global_step - steps) // args.eval_interval and \
                    global_step < args.total_timesteps:
                continue

            # every eval_interval env steps and at the end: evaluate the greedy policy, log, checkpoint
            sr, eval_ret, reached = evaluate(vec_env, policy, o_norm, g_norm, T, device, args.n_test_rollouts)
            sps = int(global_step / (elapsed := time.time() - start_time))
            for key, value in {"eval/success_rate": sr, "eval/episodic_return": eval_ret, "eval/reached_rate": reached,
                               "charts/SPS": sps, "charts/gradient_steps": grad_steps}.items():
                writer.add_scalar(key, value, global_step)
            left = elapsed / global_step * max(args.total_timesteps - global_step, 0)
            print(f"step {global_step:>8}/{args.total_timesteps} | success {sr:.2f} | return {eval_ret:7.2f} | "
                  f"reached {reached:.2f} | SPS {sps:>5} | {elapsed:5.0f}s elapsed, ~{left:.0f}s left", flush=True)
            if args.save_model:
                save_checkpoint(ckpt_path, policy, o_norm, g_norm, args)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}")
    finally:
        vec_env.close()
        env.close()
        writer.close()
    saved = ""
    if args.save_model:
        save_checkpoint(ckpt_path, policy, o_norm, g_norm, args)
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
