# SPDX-License-Identifier: MIT -- docs: docs/hdm.md
"""HDM: Hindsight Divergence Minimization (Zhang & Stadie, "Understanding Hindsight Goal Relabeling Requires
Rethinking Divergence Minimization", 2022), with the paper's Table 1 baselines as --algo.

Idea: goal-conditioned Q-learning and hindsight behaviour cloning both minimise a divergence to the hindsight data.
The Q-learning half gives HER's reward: 0 when the relabelled goal is the very next state, else -1 (Sec. 4.3). The
cloning half is sound only where Q says the action moves the agent at least -ln gamma_hdm steps closer (Sec. 4.4).
One network is the Q-function and the Boltzmann policy softmax(Q), so actions are discrete (Box: 3 bins per dim).

Equations implemented (Alg. 1 in the reward form the authors' code runs, duruoli/hdm2, hdm/learn/core.py):
  relabel:    g = ag_{t+1+k}, k ~ U{0..L-t-1}, k = 0 with probability next_state_p; relabelled with probability
              future_p (0.85), else the episode's goal                       (duruoli/hdm2, hdm/replay/core.py)
  reward:     r = 0 if the goal was relabelled with k = 0 (the next state, by index), else -1   (Eq. 28, r=-1, beta=1)
  TD:         y = min(r + gamma Q'(s', argmax_a' Q(s', a', g), g), 0)  (double DQN); L_td = mean (Q(s, a, g) - y)^2
  gate:       w = 1[Q(s, a, g) - max_a' Q(s', a', g) < ln gamma_hdm]                                (Eq. 31)
  BC:         L_bc = -mean_batch w log softmax(Q(s, ., g))[a]                                       (Eq. 32)
  loss:       L_td + beta L_bc; Adam; every target_interval (10) gradient steps Q' <- 0.995 Q' + 0.005 Q
--algo picks a row of Table 1 (same network, sampler and schedule):
  gcsl      only -mean log softmax(Q(s, ., g_bc))[a], g_bc = ag_{t+1+k} for every row (Eq. 12); no TD, no target
  her01     L_td with r = 1 on next-state goals, 0 otherwise (target clipped to [0, 1/(1 - gamma)])
  her_sql   L_td with the soft backup y = r + gamma tau (logsumexp(Q'(s', .)/tau) - ln |A|), tau = 0.2
  her       L_td with r = (-1, 0);  her_hbc  L_td + beta L_bc with w = 1 on every row;  hdm  the gated loss above
Collection: argmax plus random_eps uniform actions for every --algo, as the authors' loop (duruoli/hdm2,
hdm/algo/core.py); --collect softmax samples softmax(Q). Rewards: the method's own convention; --reward threshold
takes success from the env's sparse compute_reward, y = r where that ends the task. Evaluation: final is_success.
Deviations (reasons in docs/hdm.md): 2 x 256 units, lr 1e-3, 20 random episodes (Table 2: 400-300, 5e-4, 200);
the TD target clipped on every env (the authors' code leaves Four Rooms unclipped: --no-clip-target).

Usage:
  python hdm.py --env FetchReach                                   # the demo: 27 discrete actions, 6k env steps
  python hdm.py --env FourRooms --next-state-p 0.2 --total-timesteps 200000 --hidden-dims 400 300 --lr 5e-4 \
      --random-episodes 200                                        # Table 1, Four Rooms (--algo her | gcsl ...)
  python hdm.py --eval-checkpoint runs/<run>/hdm.pt --n-test-rollouts 100
"""

import math
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
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter

import envs

ALGO = "hdm"


@dataclass
class Args:
    env: str = "FetchReach"
    """goal env: a short name (FetchReach, FourRooms, BitFlip:n=10, ...) or a Gymnasium id; Box actions discretised"""
    algo: Literal["hdm", "her", "her01", "her_sql", "her_hbc", "gcsl"] = "hdm"
    """the method: HDM or a Table 1 baseline (see the docstring)"""
    seed: int = 1
    """seed of random, numpy, torch and the envs (the agent's and the envs' streams are spawned from it apart)"""
    total_timesteps: int = 6_000
    """env steps, all envs and the random warm-up episodes counted"""
    num_envs: int = 1
    """parallel envs; one cycle collects one episode from each, then as many gradient steps as env steps (UTD 1)"""
    eval_interval: int = 1_000
    """env steps between evaluations (paper: 2000, one epoch), none in the warm-up; one more ends the run"""
    n_test_rollouts: int = 20
    """greedy evaluation episodes per evaluation (paper: 50)"""
    batch_size: int = 256
    """transitions per gradient step"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions"""
    future_p: float = 0.85
    """hindsight relabelling ratio: the fraction of goals replaced by achieved ones"""
    next_state_p: float = 0.5
    """probability that a relabelled goal is the next state, k = 0 (paper: 0.2 Four Rooms, 0.5 Lunar, 0.6 Sawyer)"""
    gamma: float = 0.98
    """discount"""
    polyak: float = 0.995
    """target smoothing: target <- polyak * target + (1 - polyak) * online, once every target_interval gradient steps"""
    target_interval: int = 10
    """gradient steps between two Polyak updates of the target network (Table 2's "target update interval")"""
    lr: float = 1e-3
    """Adam learning rate (paper: 5e-4)"""
    random_eps: float = 0.1
    """probability of a uniformly random action while collecting, for every --algo"""
    collect: Literal["greedy", "softmax"] = "greedy"
    """collecting acts by argmax Q, or samples softmax(Q) (authors' code without --greedy_action); random_eps on top"""
    random_episodes: int = 20
    """episodes of uniformly random actions before training, counted in the budget (paper: 200)"""
    hidden_dims: List[int] = field(default_factory=lambda: [256, 256])
    """hidden layer widths of the Q-network (ReLU; paper: 400 300)"""
    bins: int = 3
    """discretisation of each Box action dimension ({-1, 0, 1} for 3 bins)"""
    head: Literal["auto", "joint", "factorised"] = "auto"
    """Q over the joint discretised actions, or one head per dimension, Q = sum_i Q_i; auto: factorised above 100"""
    reward: Literal["next_state", "threshold"] = "next_state"
    """training reward: success iff the goal is the next state, by index (the paper's), or the env's sparse test"""
    gamma_hdm: float = 0.85
    """the gate's threshold: imitate when Q(s, a, g) - max Q(s', ., g) < ln gamma_hdm (paper: 0.85 Four Rooms)"""
    beta: float = 1.0
    """weight of the behaviour-cloning term"""
    clip_target: bool = True
    """clip the TD target to the return's range (<= 0; her01: [0, 1/(1 - gamma)]); authors: all envs but Four Rooms"""
    sql_tau: float = 0.2
    """her_sql: temperature of the soft backup"""
    save_model: bool = False
    """write the Q-network and args to runs/<run>/hdm.pt after each evaluation and at the end"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint for --n-test-rollouts episodes instead of training"""
    torch_threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default, every core)"""
    torch_deterministic: bool = True
    """use deterministic torch algorithms"""
    cuda: bool = False
    """train on the GPU if one is available"""


def mlp(in_dim, out_dim, hidden_dims, activation=nn.ReLU):
    layers, dims = [], [in_dim, *hidden_dims]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


class Batch(NamedTuple):
    obs: np.ndarray
    actions: np.ndarray  # [B, dims] action indices
    rewards: np.ndarray  # in the method's convention, algo_rewards(args.algo)
    next_obs: np.ndarray
    g: np.ndarray
    dones: np.ndarray  # 1 only on --reward threshold successes of tasks that end there; else the target bootstraps
    g_bc: np.ndarray  # GCSL's goal ag_{t+1+k}, relabelled on every row


# ---- HDM: what differs from her_ddpg.py ----
# One discrete Q-network is critic and policy; the reward is 0 on next-state goals (by index); the loss is double
# DQN's TD plus the gated cross-entropy of softmax(Q). --algo switches to the other rows of Table 1.

class QNetwork(nn.Module):
    """Q(s, ., g) = MLP([obs, g]) -> [dims, n]: one row of n values per action dimension (dims = 1: joint actions).
    It is also the policy, pi(a | s, g) = softmax(Q(s, ., g)); factorised, Q(s, a, g) = sum_i Q_i(s, a_i, g)."""

    def __init__(self, in_dim, dims, n, hidden_dims):
        super().__init__()
        self.net, self.dims, self.n = mlp(in_dim, dims * n, hidden_dims), dims, n

    def forward(self, x):
        return self.net(x).view(-1, self.dims, self.n)


def q_of(q, a):
    """Q(s, a, g) for actions a [B, dims]."""
    return q.gather(2, a.unsqueeze(-1)).squeeze(-1).sum(1)


def log_pi(q, a):
    """log softmax(Q(s, ., g))[a], summed over the factorised dimensions."""
    return F.log_softmax(q, -1).gather(2, a.unsqueeze(-1)).squeeze(-1).sum(1)


def soft_value(q, tau):
    """tau (logsumexp(Q / tau) - ln |A|) per dimension, summed: HER + SQL's backup."""
    return (tau * (torch.logsumexp(q / tau, -1) - math.log(q.shape[-1]))).sum(1)


def algo_rewards(algo):
    """(r_fail, r_success) the method trains on: (0, 1) for Table 1's HER r = (0, 1), else (-1, 0) (Eq. 28)."""
    return (0.0, 1.0) if algo == "her01" else (-1.0, 0.0)


class EpisodeBuffer:
    """Whole episodes as arrays obs[E, T+1], ag[E, T+1], g[E, T], actions[E, T, dims] (integers); sample() relabels.

    Episodes that end early (tasks that terminate on success) keep their length in ep_len; steps past it are unused.
    reached(ag_next, g) -> bool array is --reward threshold's success test; None: the next-state test, by index.
    terminal: the env ends episodes on success, so threshold successes are terminal (d = 1).
    """

    def __init__(self, capacity, T, obs_dim, goal_dim, act_dims, rng, future_p=0.85, next_state_p=0.5,
                 rewards=(-1.0, 0.0), reached=None, terminal=False):
        self.E, self.T, self.rng, self.terminal = max(capacity // T, 1), T, rng, terminal
        self.future_p, self.next_state_p, self.rewards, self.reached = future_p, next_state_p, rewards, reached
        self.obs = np.zeros((self.E, T + 1, obs_dim), np.float32)
        self.ag = np.zeros((self.E, T + 1, goal_dim), np.float32)
        self.g = np.zeros((self.E, T, goal_dim), np.float32)
        self.actions = np.zeros((self.E, T, act_dims), np.int64)
        self.ep_len = np.zeros(self.E, np.int64)
        self.ptr, self.size = 0, 0

    def store(self, obs, ag, g, actions, ep_len):
        """Add a batch of episodes; returns their indices."""
        idx = (self.ptr + np.arange(len(ep_len))) % self.E
        self.obs[idx], self.ag[idx], self.g[idx], self.actions[idx], self.ep_len[idx] = obs, ag, g, actions, ep_len
        self.ptr, self.size = (self.ptr + len(ep_len)) % self.E, min(self.size + len(ep_len), self.E)
        return idx

    def sample(self, batch_size):
        e = self.rng.integers(0, self.size, batch_size)
        L = self.ep_len[e]
        t = (self.rng.random(batch_size) * L).astype(np.int64)
        k = (self.rng.random(batch_size) * (L - t)).astype(np.int64)  # k in 0 .. L-t-1: goal index t+1 .. L
        k[self.rng.random(batch_size) < self.next_state_p] = 0
        relabel = self.rng.random(batch_size) < self.future_p
        g_bc = self.ag[e, t + 1 + k]
        g = np.where(relabel[:, None], g_bc, self.g[e, t])
        if self.reached is None:  # Eq. 28: success only on goals relabelled to the next state itself
            success, d = relabel & (k == 0), np.zeros(batch_size, np.float32)  # no terminal states (authors' code)
        else:  # --reward threshold: the env's own test on (ag_{t+1}, g); terminal where the env would end
            success = self.reached(self.ag[e, t + 1], g)
            d = (success & self.terminal).astype(np.float32)
        r = np.where(success, self.rewards[1], self.rewards[0]).astype(np.float32)
        return Batch(self.obs[e, t], self.actions[e, t], r, self.obs[e, t + 1], g, d, g_bc)


def td_target(r, q_next, gamma, rewards=(-1.0, 0.0), clip=True, d=0.0):
    """y = r + gamma (1 - d) Q'(s', a'); clipped to the return's range: y <= 0 with (-1, 0) rewards (the authors'
    one-sided clip), 0 <= y <= 1/(1 - gamma) with (0, 1) rewards."""
    y = r + gamma * (1 - d) * q_next
    if not clip:
        return y
    return y.clamp(0.0, 1 / (1 - gamma)) if rewards == (0.0, 1.0) else y.clamp(max=rewards[1] / (1 - gamma))


def hdm_loss(q_net, q_target, x, a, r, x2, x_bc, args, d=0.0):
    """The loss of --algo on one batch (inputs are [obs, goal], d the done flags); returns (loss, stats)."""
    if args.algo == "gcsl":  # Eq. 12: hindsight behaviour cloning only
        bc_loss = -log_pi(q_net(x_bc), a).mean()
        return bc_loss, {"bc_loss": bc_loss.item()}
    q_all = q_net(x)
    q_sa = q_of(q_all, a)
    with torch.no_grad():
        q2_online, q2_target = q_net(x2), q_target(x2)
        if args.algo == "her_sql":  # soft backup on the target network
            q_next = soft_value(q2_target, args.sql_tau)
        else:  # double DQN: the online net picks a', the target net values it
            q_next = q_of(q2_target, q2_online.argmax(-1))
        y = td_target(r, q_next, args.gamma, algo_rewards(args.algo), args.clip_target, d)
        q2_max = q2_online.max(-1).values.sum(1)
    td_loss = (q_sa - y).pow(2).mean()  # no 1/2, as the authors' code
    stats = {"td_loss": td_loss.item(), "q_values": q_sa.mean().item()}
    if args.algo not in ("hdm", "her_hbc"):
        return td_loss, stats
    gate = (q_sa.detach() - q2_max < math.log(args.gamma_hdm)).float() if args.algo == "hdm" else torch.ones_like(r)
    bc_loss = -(gate * log_pi(q_all, a)).mean()  # Eq. 32: the mean runs over the whole batch, gated rows give 0
    stats.update(bc_loss=bc_loss.item(), gate_fraction=gate.mean().item())
    return td_loss + args.beta * bc_loss, stats


def update(batch, q_net, q_target, optimizer, args):
    """One gradient step of --algo's loss on a relabelled batch; returns the logged losses and stats."""
    device = next(q_net.parameters()).device
    x, x2, x_bc = (torch.as_tensor(np.concatenate(p, -1), device=device)
                   for p in ((batch.obs, batch.g), (batch.next_obs, batch.g), (batch.obs, batch.g_bc)))
    a, r, d = (torch.as_tensor(v, device=device) for v in (batch.actions, batch.rewards, batch.dones))
    loss, stats = hdm_loss(q_net, q_target, x, a, r, x2, x_bc, args, d)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    stats["positive_fraction"] = float((batch.rewards == algo_rewards(args.algo)[1]).mean())
    return stats


def select_action(q_net, x, explore, args, rng):
    """Greedy argmax; while collecting, argmax (or a sample of softmax(Q), --collect softmax) with a uniform action
    at probability random_eps, for every --algo (the authors' act(), duruoli/hdm2, hdm/agent/core.py)."""
    with torch.no_grad():
        q = q_net(x)
    if explore and args.collect == "softmax":  # inverse CDF per dimension
        cdf = torch.softmax(q, -1).cumsum(-1).cpu().numpy()
        cdf[..., -1] = 1.0  # a float32 sum can end below u < 1, and argmax of all-False would give action 0
        a = (rng.random(cdf.shape[:-1] + (1,)) < cdf).argmax(-1)
    else:
        a = q.argmax(-1).cpu().numpy()
    if explore:
        random_a = rng.integers(0, q.shape[-1], a.shape)
        a = np.where(rng.random((len(a), 1)) < args.random_eps, random_a, a)
    return a  # [n_envs, dims]
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
    actions: np.ndarray  # [n, T, dims] action indices
    ep_len: np.ndarray  # [n]
    success: np.ndarray  # [n], is_success at each episode's final step
    ret: np.ndarray  # [n], undiscounted env return


def rollout(vec_env, q_net, T, device, args, rng, *, explore, warmup=False):
    """One episode in each env (reset together, stepped in lockstep); explore: epsilon-greedy, warmup: uniform."""
    n, space = vec_env.num_envs, vec_env.single_action_space
    ob, _ = vec_env.reset()
    factorised, dims = isinstance(space, gym.spaces.MultiDiscrete), action_shape(space)[0]
    obs, ag = (np.zeros((n, T + 1, ob[k].shape[-1]), np.float32) for k in ("observation", "achieved_goal"))
    g = np.zeros((n, T, ob["desired_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T, dims), np.int64)
    ep_len, success, ret, running = np.full(n, T), np.zeros(n), np.zeros(n), np.ones(n, bool)
    obs[:, 0], ag[:, 0] = ob["observation"], ob["achieved_goal"]
    for t in range(T):
        g[:, t] = ob["desired_goal"]
        if warmup:
            a = rng.integers(0, space.nvec if factorised else space.n, (n, dims))
        else:
            x = np.concatenate([ob["observation"], ob["desired_goal"]], -1).astype(np.float32)
            a = select_action(q_net, torch.as_tensor(x, device=device), explore, args, rng)
        ob, r, terminated, truncated, info = vec_env.step(a if factorised else a[:, 0])  # [n, dims] or [n]
        actions[:, t], obs[:, t + 1], ag[:, t + 1] = a, ob["observation"], ob["achieved_goal"]
        ret += r * running
        success = np.where(running, info["is_success"], success)  # success at the episode's final step
        ended = running & (terminated | (t == T - 1))
        ep_len[ended & terminated] = t + 1
        running &= ~ended
        if not running.any():
            break
    return Episodes(obs, ag, g, actions, ep_len, success, ret)


def evaluate(vec_env, q_net, T, device, n_episodes, args, rng):
    """Greedy policy; success = is_success at each episode's final step. Returns (success rate, return)."""
    successes, returns = [], []
    while len(successes) < n_episodes:
        ep = rollout(vec_env, q_net, T, device, args, rng, explore=False)
        successes += list(ep.success)
        returns += list(ep.ret)
    return float(np.mean(successes[:n_episodes])), float(np.mean(returns[:n_episodes]))


def make_env(args):
    """The goal env, with Box actions discretised into args.bins per dimension (factorised when asked or large)."""
    env = envs.make(args.env)
    if not isinstance(env.action_space, gym.spaces.Box):
        return env
    env.close()
    active = env.action_space.shape[0] - (1 if args.env.split(":")[0].startswith("FetchReach") else 0)
    factorised = args.head == "factorised" or (args.head == "auto" and args.bins**active > 100)
    return envs.make(args.env, discrete=args.bins, factorised=factorised)


def make_vec_env(args, n):
    """n copies of the goal env. rollout() resets them all at each cycle's start; an env whose episode ends early
    is auto-reset by the next step, and rollout() stores nothing past that episode's end."""
    return gym.vector.SyncVectorEnv([lambda: make_env(args) for _ in range(n)])


def action_shape(space):
    """(dims, n): one row of n actions per dimension."""
    if isinstance(space, gym.spaces.MultiDiscrete):
        return len(space.nvec), int(space.nvec[0])
    return 1, int(space.n)


def check_env(env, args):
    """One-line errors for envs and settings this script cannot handle. Returns the env's success test reached(ag, g)
    (its compute_reward equals the success value), for --reward threshold and the ag-change ratio; None if dense."""
    space = env.action_space
    if not isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        raise envs.EnvError(f"{args.env} has {space} actions; HDM needs discrete (or discretisable Box) actions")
    ob_space = env.observation_space
    if not isinstance(ob_space["achieved_goal"], gym.spaces.Box):  # FrankaKitchen: a dict of per-task goals
        raise envs.EnvError(f"{args.env}: its goals are {type(ob_space['achieved_goal']).__name__} spaces; HDM "
                            "relabels goals that are arrays")
    if ob_space["achieved_goal"].shape != ob_space["desired_goal"].shape:
        raise envs.EnvError(f"{args.env}: achieved and desired goals differ in shape, so they cannot be relabelled")
    for name in ("total_timesteps", "num_envs", "batch_size", "buffer_size", "target_interval", "eval_interval",
                 "n_test_rollouts"):
        if getattr(args, name) < 1:
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("future_p", "next_state_p", "random_eps", "polyak"):
        if not 0 <= getattr(args, name) <= 1:
            raise envs.EnvError(f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(args, name)}")
    if not 0 < args.gamma_hdm <= 1 or not 0 < args.gamma < 1:
        raise envs.EnvError("--gamma-hdm must lie in (0, 1] and --gamma in (0, 1)")
    try:
        r_success = envs.sparse_rewards(env)[1]  # -1/0 or 0/1
    except envs.EnvError:
        if args.reward == "threshold":
            raise  # a dense reward cannot say which goals are reached
        return None  # the next-state reward never reads the env's reward
    return lambda ag, g: env.unwrapped.compute_reward(ag, g, None) == r_success


def save_checkpoint(path, q_net, args):
    """Tensors and plain types only, so loading needs no code from the file (weights_only=True)."""
    torch.save({"algo": ALGO, "q_net": q_net.state_dict(), "args": asdict(args)}, path)


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
    """Evaluate a saved Q-network greedily over --n-test-rollouts episodes."""
    ckpt = load_checkpoint(args.eval_checkpoint)
    saved = Args(**ckpt["args"])
    env = make_env(saved)
    in_dim = sum(env.observation_space[k].shape[0] for k in ("observation", "desired_goal"))
    q_net = QNetwork(in_dim, *action_shape(env.action_space), saved.hidden_dims)
    q_net.load_state_dict(ckpt["q_net"])
    vec_env = make_vec_env(saved, saved.num_envs)
    rng, env_seed = seed_streams(args.seed)
    vec_env.reset(seed=env_seed)
    sr, ret = evaluate(vec_env, q_net, envs.horizon(env), "cpu", args.n_test_rollouts, saved, rng)
    print(f"{saved.env}: success rate {sr:.3f}, mean return {ret:.2f} over {args.n_test_rollouts} episodes")
    vec_env.close()
    return sr


def seed_streams(seed):
    """(agent's numpy generator, envs' reset seed), spawned apart: both seeded with `seed`, env 0 draws the agent's."""
    agent, env = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(agent), int(env.generate_state(1)[0])


def seed_everything(args):
    """Seed random, numpy and torch, set the torch threads; returns (device, numpy generator, env seed)."""
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    return torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu"), *seed_streams(args.seed)


def start_run(args, env):
    """The run directory, its TensorBoard writer with the hyper-parameter table, and the header line."""
    run_dir = f"runs/{args.env.replace(':', '_')}__{ALGO}_{args.algo}__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    print(f"{ALGO} | {env.spec.id} | {args.total_timesteps:,} env steps | seed {args.seed} | run {run_dir} | "
          "tensorboard --logdir runs", flush=True)
    return run_dir, writer


def main(args):
    if args.eval_checkpoint:
        return load_and_evaluate(args)
    device, rng, env_seed = seed_everything(args)

    # envs: one in this process for the spaces and the success test, num_envs for collecting
    env = make_env(args)
    reached, T = check_env(env, args), envs.horizon(env)
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    dims, n_actions = action_shape(env.action_space)
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=env_seed)

    # one network: the Q-function and the policy; its target copy; the buffer
    q_net = QNetwork(obs_dim + goal_dim, dims, n_actions, args.hidden_dims).to(device)
    q_target = QNetwork(obs_dim + goal_dim, dims, n_actions, args.hidden_dims).to(device)
    q_target.load_state_dict(q_net.state_dict())
    optimizer = torch.optim.Adam(q_net.parameters(), lr=args.lr)
    buffer = EpisodeBuffer(args.buffer_size, T, obs_dim, goal_dim, dims, rng, args.future_p, args.next_state_p,
                           algo_rewards(args.algo), reached if args.reward == "threshold" else None,
                           getattr(env.unwrapped, "terminate_on_success", False))
    run_dir, writer = start_run(args, env)
    ckpt_path = f"{run_dir}/{ALGO}.pt"

    global_step, grad_steps, episodes, start_time, sr, losses = 0, 0, 0, time.time(), 0.0, {}
    try:
        while global_step < args.total_timesteps:
            # collect one episode per env (uniformly random actions during the warm-up) and store it
            warmup = episodes < args.random_episodes
            ep = rollout(vec_env, q_net, T, device, args, rng, explore=True, warmup=warmup)
            buffer.store(ep.obs, ep.ag, ep.g, ep.actions, ep.ep_len)
            steps = int(ep.ep_len.sum())
            global_step, episodes = global_step + steps, episodes + len(ep.ep_len)
            writer.add_scalar("charts/success_rate", ep.success.mean(), global_step)
            writer.add_scalar("charts/episodic_return", ep.ret.mean(), global_step)
            if reached is not None:  # the ag-change ratio (Sec. 5.3): episodes whose last ag is off the first
                moved = ~reached(ep.ag[np.arange(len(ep.ag)), ep.ep_len], ep.ag[:, 0])
                writer.add_scalar("charts/ag_change", moved.mean(), global_step)

            # after the warm-up: as many gradient steps on relabelled batches as env steps just collected (UTD 1)
            for _ in range(0 if warmup else steps):
                losses = update(buffer.sample(args.batch_size), q_net, q_target, optimizer, args)
                grad_steps += 1
                if grad_steps % args.target_interval == 0:
                    soft_update(q_net, q_target, args.polyak)
            crossed = global_step // args.eval_interval > (global_step - steps) // args.eval_interval
            if global_step < args.total_timesteps and (warmup or not crossed):
                continue

            # every eval_interval env steps after the warm-up, and at the end: log, evaluate greedily, checkpoint
            for key, value in losses.items():
                writer.add_scalar(f"{'stats' if key.endswith('fraction') else 'losses'}/{key}", value, global_step)
            sr, eval_ret = evaluate(vec_env, q_net, T, device, args.n_test_rollouts, args, rng)
            elapsed = time.time() - start_time
            sps = int(global_step / elapsed)
            writer.add_scalar("eval/success_rate", sr, global_step)
            writer.add_scalar("eval/episodic_return", eval_ret, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("charts/gradient_steps", grad_steps, global_step)
            writer.add_scalar("charts/episodes", episodes, global_step)
            left = elapsed / global_step * max(args.total_timesteps - global_step, 0)
            gate = f" | gate {losses['gate_fraction']:.2f}" if "gate_fraction" in losses else ""
            print(f"step {global_step:>8}/{args.total_timesteps} | success {sr:.2f} | return {eval_ret:7.2f}{gate} | "
                  f"SPS {sps:>5} | {elapsed:5.0f}s elapsed, ~{left:.0f}s left", flush=True)
            if args.save_model:
                save_checkpoint(ckpt_path, q_net, args)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}")
    finally:
        vec_env.close()
        env.close()
        writer.close()
    saved = ""
    if args.save_model:
        save_checkpoint(ckpt_path, q_net, args)
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
