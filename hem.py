# SPDX-License-Identifier: MIT -- docs: docs/hem.md
"""hEM: Hindsight Expectation Maximization (Tang & Kucukelbir, AISTATS 2021). The paper's HER + hEM hybrid (Sec. 4.4)
is hem_hybrid.py.

Idea: read goal-conditioned RL with a sparse success reward as inference and maximise a lower bound (ELBO) on the
log-probability of success by EM. The best E-step puts its mass on *successful* (trajectory, goal) pairs, which
hindsight relabeling samples: a trajectory, named with a goal it achieved. The M-step maximises log pi(a | s, g) on
them: supervised learning, with no critic, no reward weighting and no importance ratio. Off-policy: every episode
stays in the buffer, and a bigger buffer only tightens the bound (Theorem 3).

Equations implemented (each marked in the code):
  E-step (q_h):  (s_t, a_t, g') with g' = ag_{t'}, t' ~ U{t+1, ..., L}: the future strategy with relabel probability 1
  M-step:        Eq. (7)  minimise -mean log pi(a_t | s_t, g') over a minibatch of q_h samples, a few Adam steps
  policies:      discrete  pi = Categorical(softmax(MLP(s, g))), collected eps-uniform (random_eps = eps = 0.2)
                 continuous pi = N(mu(s, g), sigma^2), one global learnable sigma, collected as a' = clip(a +
                 N(0, sigma_a^2)), a ~ pi, sigma_a = 0.5 in the paper's action units; a' (executed) is cloned
Deviations from the paper (reasons in docs/hem.md): Algorithm 1's "grad log sum log pi" read as grad sum log pi;
App. C.2's 5-unit hidden layers read as 3 x 256; tanh-squashed Gaussian mean; HER's input normalisers; one process,
not about 30 MPI workers; U (not stated in the paper) = 20 gradient steps per N = 10 episodes.

Usage:
  python hem.py --env FetchReach                                  # the demo: 5k env steps
  python hem.py --env BitFlip --n-episodes 20 --n-batches 50 --batch-size 128 --total-timesteps 10000
  python hem.py --eval-checkpoint runs/<run>/hem.pt --n-test-rollouts 100 [--capture-video]
"""

import os
import random
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import List, NamedTuple, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions import Categorical, Independent, Normal
from torch.utils.tensorboard import SummaryWriter

import envs

ALGO = "hem"


@dataclass
class Args:
    env: str = "FetchReach"
    """goal env: a short name (FetchReach, BitFlip:n=10, Navigation:k=5, FourRoomMaze, ...) or a Gymnasium id"""
    seed: int = 1
    """seed of random, numpy, torch and the envs"""
    total_timesteps: Optional[int] = None
    """training env steps, all envs counted (unset: 12k on FetchReach, 5k elsewhere)"""
    num_envs: int = 2
    """parallel envs, stepped in lockstep; episodes are collected num_envs at a time"""
    eval_interval: int = 500
    """env steps between evaluations; one more ends the run"""
    n_test_rollouts: int = 10
    """deterministic evaluation episodes (the most likely action, or the Gaussian's mean)"""
    n_episodes: int = 10
    """N, episodes collected per iteration"""
    n_batches: int = 20
    """U, gradient steps per iteration, each on a fresh q_h minibatch"""
    batch_size: int = 256
    """samples per gradient step"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions (hEM keeps everything: a bigger buffer tightens the bound, Theorem 3)"""
    on_policy: bool = False
    """empty the buffer before each iteration's episodes (the setting of the paper's Theorem 2)"""
    lr_actor: float = 1e-3
    """Adam learning rate of the policy"""
    noise_eps: Optional[float] = None
    """std sigma_a of the Gaussian noise on Box actions while collecting, in units of max_u (unset: 0.5; 2.5 on
    Navigation: the paper's 0.5 on its [-0.2, 0.2] actions)"""
    random_eps: float = 0.2
    """probability of a uniformly random action while collecting (discrete actions only)"""
    hidden_dims: List[int] = field(default_factory=lambda: [256, 256, 256])
    """hidden layer widths of the policy, ReLU"""
    clip_obs: float = 200.0
    """observations and goals are clipped to +-clip_obs before normalising"""
    clip_range: float = 5.0
    """normalised inputs are clipped to +-clip_range"""
    norm_eps: float = 0.01
    """lower bound of the normaliser's std"""
    save_model: bool = False
    """write policy, normalisers and args to runs/<run>/hem.pt after each evaluation and at the end"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint for --n-test-rollouts episodes instead of training"""
    capture_video: bool = False
    """with --eval-checkpoint: save the first evaluation episode as a GIF next to the checkpoint"""
    torch_threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default, every core)"""
    torch_deterministic: bool = True
    """use deterministic torch algorithms"""
    cuda: bool = False
    """train on the GPU if one is available"""


# Unset flags' per-env values. Sec. 3.1: sigma_a = 0.5; Navigation moves 0.2 a (Sec. 4.2), so that is 2.5 x max_u.
ENV_DEFAULTS = {"default": dict(noise_eps=0.5, total_timesteps=5_000), "Navigation": dict(noise_eps=2.5),
                "FetchReach": dict(total_timesteps=12_000)}  # FetchReach: 12k, where the greedy success has settled


def fill_defaults(args):
    """Set every flag left unset (None) to the env's default."""
    defaults = {**ENV_DEFAULTS["default"], **ENV_DEFAULTS.get(envs.parse(args.env)[0].split("-v")[0], {})}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
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


def mlp(in_dim, out_dim, hidden_dims, activation=nn.ReLU):
    layers, dims = [], [in_dim, *hidden_dims]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


class Batch(NamedTuple):
    obs: np.ndarray
    actions: np.ndarray  # the executed actions; a discrete one as one float column holding its index
    rewards: np.ndarray
    next_obs: np.ndarray
    g: np.ndarray
    dones: np.ndarray


# ---- hEM: what differs from her_ddpg.py ----
class GaussianPolicy(nn.Module):
    """pi(a | s, g) = N(mu(s, g), sigma^2) with one global, learnable sigma per action dimension (App. C.2);
    mu(s, g) = max_u tanh(MLP([o_norm, g_norm])) is her_ddpg.py's actor."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dims, max_u):
        super().__init__()
        self.net, self.max_u = mlp(obs_dim + goal_dim, act_dim, hidden_dims), max_u
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, x):
        return self.max_u * torch.tanh(self.net(x))

    def std(self):
        return self.log_std.clamp(-5.0, 1.0).exp()

    def dist(self, x):
        return Independent(Normal(self(x), self.std()), 1)  # log_prob sums over action dimensions


class CategoricalPolicy(nn.Module):
    """pi(a | s, g) = Categorical(softmax(MLP([o_norm, g_norm]))) (App. C.2)."""

    def __init__(self, obs_dim, goal_dim, n_actions, hidden_dims):
        super().__init__()
        self.net = mlp(obs_dim + goal_dim, n_actions, hidden_dims)

    def dist(self, x):
        return Categorical(logits=self.net(x))


def dims(env):
    """(obs_dim, goal_dim, act_dim, max_u); a discrete action is stored as one column holding its index."""
    space, box = env.action_space, isinstance(env.action_space, gym.spaces.Box)
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    return obs_dim, goal_dim, space.shape[0] if box else 1, float(space.high[0]) if box else 1.0


def make_policy(env, args, device):
    """The policy (Categorical for Discrete actions, Gaussian for a Box) and its Adam optimiser."""
    obs_dim, goal_dim, act_dim, max_u = dims(env)
    if isinstance(env.action_space, gym.spaces.Discrete):
        policy = CategoricalPolicy(obs_dim, goal_dim, int(env.action_space.n), args.hidden_dims).to(device)
    else:
        policy = GaussianPolicy(obs_dim, goal_dim, act_dim, args.hidden_dims, max_u).to(device)
    return policy, torch.optim.Adam(policy.parameters(), lr=args.lr_actor, fused=True)  # fused: faster updates


class EpisodeBuffer:
    """Whole episodes as arrays obs[E, T+1], ag[E, T+1], g[E, T], actions[E, T]; sample() is the E-step. Episodes
    that end early (tasks that terminate on success) keep their length in ep_len; steps past it are unused."""

    def __init__(self, capacity, T, obs_dim, goal_dim, act_dim, env, rng):
        self.E, self.T, self.env, self.rng = max(capacity // T, 1), T, env, rng
        self.obs = np.zeros((self.E, T + 1, obs_dim), np.float32)
        self.ag = np.zeros((self.E, T + 1, goal_dim), np.float32)
        self.g = np.zeros((self.E, T, goal_dim), np.float32)
        self.actions = np.zeros((self.E, T, act_dim), np.float32)
        self.ep_len = np.zeros(self.E, np.int64)
        self.ptr, self.size = 0, 0

    def store(self, obs, ag, g, actions, ep_len):
        """Add a batch of episodes; returns their indices."""
        idx = (self.ptr + np.arange(len(ep_len))) % self.E
        self.obs[idx], self.ag[idx], self.g[idx], self.actions[idx], self.ep_len[idx] = obs, ag, g, actions, ep_len
        self.ptr, self.size = (self.ptr + len(ep_len)) % self.E, min(self.size + len(ep_len), self.E)
        return idx

    def clear(self):
        self.ptr, self.size = 0, 0

    def sample(self, batch_size, episodes=None):
        """q_h: g' = ag_{t'}, t' ~ U{t+1 .. L} (HER's future strategy, relabel probability 1), so every sample is a
        success for its goal; rewards and dones are recomputed for g' (hEM itself never reads them)."""
        e = self.rng.integers(0, self.size, batch_size) if episodes is None else self.rng.choice(episodes, batch_size)
        L = self.ep_len[e]
        t = (self.rng.random(batch_size) * L).astype(np.int64)
        t_goal = t + 1 + (self.rng.random(batch_size) * (L - t)).astype(np.int64)  # t' > t: a_t must matter
        g = self.ag[e, t_goal]
        ag_next = self.ag[e, t + 1]
        r = self.env.compute_reward(ag_next, g, None).astype(np.float32)
        d = np.broadcast_to(self.env.compute_terminated(ag_next, g, None), r.shape).astype(np.float32)
        return Batch(self.obs[e, t], self.actions[e, t], r, self.obs[e, t + 1], g, d)


def hem_loss(policy, x, a):
    """Eq. (7) M-step: -mean log pi(a | s, g') on q_h samples; a is the executed action (an index if discrete)."""
    if isinstance(policy, CategoricalPolicy):
        a = a.long().squeeze(-1)
    return -policy.dist(x).log_prob(a).mean()


def update(batch, policy, policy_opt):
    """One M-step gradient step on a q_h batch (x, a); returns the logged loss."""
    nll = hem_loss(policy, *batch)
    policy_opt.zero_grad()
    nll.backward()
    policy_opt.step()
    return {"nll": nll.item()}


def inverse_cdf(probs, u):
    """a ~ Categorical(probs): the first a with u < cdf(a), for u ~ U[0, 1). The last cdf entry is pinned to 1: a
    float32 cumsum can end just below 1, and a u above it would match no entry, which argmax reads as action 0."""
    cdf = probs.cumsum(-1)
    cdf[..., -1] = 1.0
    return (u < cdf).argmax(-1)


def select_action(policy, x, args, rng, max_u, *, explore):
    """Greedy when not exploring; else the paper's exploration (Sec. 3.1, App. C.2)."""
    with torch.no_grad():
        if isinstance(policy, CategoricalPolicy):
            probs = torch.softmax(policy.net(x), -1).cpu().numpy()
            if not explore:
                return probs.argmax(-1)
            a = inverse_cdf(probs, rng.random((len(probs), 1)))  # a ~ pi
            random_a = rng.integers(0, probs.shape[-1], len(probs))
            return np.where(rng.random(len(probs)) < args.random_eps, random_a, a)  # eps-uniform
        mu = policy(x).cpu().numpy()
        if not explore:
            return mu
        a = mu + policy.std().cpu().numpy() * rng.standard_normal(mu.shape)  # a ~ N(mu, sigma^2)
        a = a + args.noise_eps * max_u * rng.standard_normal(mu.shape)  # a' = a + N(0, sigma_a^2)
        return np.clip(a, -max_u, max_u).astype(np.float32)
# ---- end ----


class Episodes(NamedTuple):
    obs: np.ndarray  # [n, T+1, obs_dim]
    ag: np.ndarray  # [n, T+1, goal_dim]
    g: np.ndarray  # [n, T, goal_dim]
    actions: np.ndarray  # [n, T, act_dim]
    ep_len: np.ndarray  # [n]
    success: np.ndarray  # [n], is_success at each episode's final step
    ret: np.ndarray  # [n], undiscounted return


def rollout(vec_env, policy, o_norm, g_norm, T, device, args, rng, max_u, *, explore):
    """One episode in each env (reset together, stepped in lockstep); explore adds the exploration noise."""
    n = vec_env.num_envs
    ob, _ = vec_env.reset()
    obs = np.zeros((n, T + 1, ob["observation"].shape[-1]), np.float32)
    ag = np.zeros((n, T + 1, ob["achieved_goal"].shape[-1]), np.float32)
    g = np.zeros((n, T, ob["desired_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T, int(np.prod(vec_env.single_action_space.shape))), np.float32)  # Discrete: 1 column
    ep_len, success, ret = np.full(n, T), np.zeros(n), np.zeros(n)
    running = np.ones(n, bool)
    obs[:, 0], ag[:, 0] = ob["observation"], ob["achieved_goal"]
    for t in range(T):
        g[:, t] = ob["desired_goal"]
        x = np.concatenate([o_norm(ob["observation"]), g_norm(ob["desired_goal"])], -1)
        a = select_action(policy, torch.as_tensor(x, device=device), args, rng, max_u, explore=explore)
        ob, r, terminated, truncated, info = vec_env.step(a)
        actions[:, t], obs[:, t + 1], ag[:, t + 1] = a.reshape(n, -1), ob["observation"], ob["achieved_goal"]
        ret += r * running
        success = np.where(running, info["is_success"], success)  # success at the episode's final step
        ended = running & (terminated | (t == T - 1))
        ep_len[ended & terminated] = t + 1
        running &= ~ended
        if not running.any():
            break
    return Episodes(obs, ag, g, actions, ep_len, success, ret)


def evaluate(vec_env, policy, o_norm, g_norm, T, device, n_episodes, args, rng, max_u):
    """Deterministic policy; success = is_success at each episode's final step. Returns (success rate, return)."""
    successes, returns = [], []
    while len(successes) < n_episodes:
        ep = rollout(vec_env, policy, o_norm, g_norm, T, device, args, rng, max_u, explore=False)
        successes += list(ep.success)
        returns += list(ep.ret)
    return float(np.mean(successes[:n_episodes])), float(np.mean(returns[:n_episodes]))


def make_env(args):
    return envs.make(args.env)


def make_vec_env(args, n):
    """n copies of the goal env. rollout() resets them all at each call's start; an env whose episode ends early
    is auto-reset by the next step, and rollout() stores nothing past that episode's end."""
    return gym.vector.SyncVectorEnv([lambda: make_env(args) for _ in range(n)])


def check_env(env, args):
    """One-line errors for envs and settings this script cannot handle."""
    space = env.action_space
    goals = [env.observation_space[k] for k in ("observation", "achieved_goal", "desired_goal")]
    if isinstance(space, gym.spaces.Box):
        if not (np.all(space.high == space.high[0]) and np.all(space.low == -space.high)):
            raise envs.EnvError(f"{args.env}: hEM here needs a symmetric action box [-max_u, max_u]^n, got {space}")
    elif not isinstance(space, gym.spaces.Discrete):
        raise envs.EnvError(f"{args.env} has {space} actions; hEM here handles Discrete or Box actions")
    if not all(isinstance(s, gym.spaces.Box) for s in goals) or goals[1].shape != goals[2].shape:
        raise envs.EnvError(f"{args.env}: goals must be flat vectors of one shape, else they cannot be relabelled")
    for name in ("total_timesteps", "num_envs", "n_episodes", "n_batches", "batch_size", "buffer_size",
                 "eval_interval", "n_test_rollouts"):
        if getattr(args, name) < (0 if name == "n_batches" else 1):
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.random_eps <= 1 or args.noise_eps < 0:
        raise envs.EnvError("--random-eps must lie in [0, 1] and --noise-eps must be >= 0")
    envs.sparse_rewards(env)  # hEM never reads rewards, but a dense reward is refused in one line


def save_checkpoint(path, policy, o_norm, g_norm, args):
    """Tensors and plain types only, so loading needs no code from the file (weights_only=True)."""
    torch.save({"algo": ALGO, "policy": policy.state_dict(), "o_norm": o_norm.state_dict(),
                "g_norm": g_norm.state_dict(), "args": asdict(args)}, path)


def load_checkpoint(path):
    """A checkpoint this file wrote, loaded without running code from it; anything else is a one-line error."""
    if not os.path.isfile(path):
        raise envs.EnvError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # torch warns about a plain pickle's protocol before refusing it
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # refuses pickled code
    except Exception as e:
        raise envs.EnvError(f"{path} is not a {ALGO}.py checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("algo") != ALGO:
        raise envs.EnvError(f"{path} is not a {ALGO}.py checkpoint")
    return ckpt


def load_and_evaluate(args):
    """Evaluate a saved policy: success rate over --n-test-rollouts episodes, optionally a GIF of the first one."""
    ckpt = load_checkpoint(args.eval_checkpoint)
    saved = Args(**ckpt["args"])
    env = make_env(saved)
    policy = make_policy(env, saved, "cpu")[0]
    policy.load_state_dict(ckpt["policy"])
    obs_dim, goal_dim, _, max_u = dims(env)
    o_norm = Normalizer(obs_dim, saved.norm_eps, saved.clip_obs, saved.clip_range)
    g_norm = Normalizer(goal_dim, saved.norm_eps, saved.clip_obs, saved.clip_range)
    o_norm.load_state_dict(ckpt["o_norm"])
    g_norm.load_state_dict(ckpt["g_norm"])
    vec_env = make_vec_env(saved, saved.num_envs)
    _, rng, env_seed = seed_everything(args)
    vec_env.reset(seed=env_seed)
    sr, ret = evaluate(vec_env, policy, o_norm, g_norm, envs.horizon(env), "cpu", args.n_test_rollouts, saved, rng,
                       max_u)
    print(f"{saved.env}: success rate {sr:.3f}, mean return {ret:.2f} over {args.n_test_rollouts} episodes")
    if args.capture_video:  # one greedy episode as a GIF next to the checkpoint
        def act(ob):
            x = np.concatenate([o_norm(ob["observation"]), g_norm(ob["desired_goal"])])[None]
            return select_action(policy, torch.as_tensor(x), saved, None, max_u, explore=False)[0]
        envs.record_gif(saved.env, act, os.path.splitext(args.eval_checkpoint)[0] + ".gif", env_seed)
    vec_env.close()
    return sr


def seed_everything(args):
    """Seed random, numpy and torch, set the torch threads; returns (device, the agent's numpy generator, the envs'
    reset seed). The last two are independent streams spawned from --seed: seeding both with the seed itself would
    make env 0 and the agent draw the same numbers."""
    agent_seq, env_seq = np.random.SeedSequence(args.seed).spawn(2)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    return device, np.random.default_rng(agent_seq), int(env_seq.generate_state(1)[0])


def start_run(args, env):
    """The run directory, its TensorBoard writer with the hyper-parameter table, and the header line."""
    run_dir = f"runs/{args.env.replace(':', '_')}__{ALGO}__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    print(f"{ALGO} | {env.spec.id} | {args.total_timesteps:,} env steps | seed {args.seed} | run {run_dir} | "
          "tensorboard --logdir runs", flush=True)
    return run_dir, writer


def main(args):
    fill_defaults(args)
    if args.eval_checkpoint:
        return load_and_evaluate(args)
    device, rng, env_seed = seed_everything(args)

    # envs: one in this process for the spaces and the vectorised reward, num_envs for collecting
    env = make_env(args)
    check_env(env, args)
    T = envs.horizon(env)
    obs_dim, goal_dim, act_dim, max_u = dims(env)
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=env_seed)  # env i: env_seed + i

    # policy, normalisers, buffer
    policy, policy_opt = make_policy(env, args, device)
    o_norm = Normalizer(obs_dim, args.norm_eps, args.clip_obs, args.clip_range)
    g_norm = Normalizer(goal_dim, args.norm_eps, args.clip_obs, args.clip_range)
    buffer = EpisodeBuffer(args.buffer_size, T, obs_dim, goal_dim, act_dim, env.unwrapped, rng)
    run_dir, writer = start_run(args, env)
    ckpt_path = f"{run_dir}/{ALGO}.pt"

    def inputs(o, g):
        return torch.as_tensor(np.concatenate([o_norm(o), g_norm(g)], -1), device=device)

    global_step, grad_steps, next_eval, start_time, sr, losses = 0, 0, args.eval_interval, time.time(), 0.0, {}
    try:
        while global_step < args.total_timesteps:
            # collect N episodes with exploration (Alg. 1 line 3), store them, update the normalisers
            if args.on_policy:
                buffer.clear()
            successes, returns = [], []
            for _ in range(-(-args.n_episodes // args.num_envs)):
                ep = rollout(vec_env, policy, o_norm, g_norm, T, device, args, rng, max_u, explore=True)
                new = buffer.store(ep.obs, ep.ag, ep.g, ep.actions, ep.ep_len)
                global_step += int(ep.ep_len.sum())
                # normaliser statistics come from relabelled samples of the new episodes (goal stats see g')
                sample = buffer.sample(int(ep.ep_len.sum()), episodes=new)
                o_norm.update(sample.obs)
                g_norm.update(sample.g)
                successes += list(ep.success)
                returns += list(ep.ret)
            writer.add_scalar("charts/success_rate", np.mean(successes), global_step)
            writer.add_scalar("charts/episodic_return", np.mean(returns), global_step)

            # U gradient steps (Alg. 1 lines 4-5): each draws a fresh q_h minibatch (E-step) and steps the M-step loss
            for _ in range(args.n_batches):
                h = buffer.sample(args.batch_size)
                losses = update((inputs(h.obs, h.g), torch.as_tensor(h.actions, device=device)), policy, policy_opt)
                grad_steps += 1
            if global_step < next_eval and global_step < args.total_timesteps:
                continue
            next_eval = (global_step // args.eval_interval + 1) * args.eval_interval

            # every eval_interval env steps and at the end: evaluate the deterministic policy, log, checkpoint
            sr, eval_ret = evaluate(vec_env, policy, o_norm, g_norm, T, device, args.n_test_rollouts, args, rng, max_u)
            elapsed = time.time() - start_time
            sps = int(global_step / elapsed)
            scalars = {**{f"losses/{k}": v for k, v in losses.items()}, "eval/success_rate": sr,
                       "eval/episodic_return": eval_ret, "charts/SPS": sps, "charts/gradient_steps": grad_steps,
                       "charts/episodes": buffer.size}
            if isinstance(policy, GaussianPolicy):
                scalars["stats/policy_std"] = policy.std().mean().item()
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, global_step)
            left = elapsed / global_step * max(args.total_timesteps - global_step, 0)
            print(f"step {global_step:>8}/{args.total_timesteps} | success {sr:.2f} | return {eval_ret:7.2f} | "
                  f"SPS {sps:>5} | {elapsed:5.0f}s elapsed, ~{left:.0f}s left", flush=True)
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
