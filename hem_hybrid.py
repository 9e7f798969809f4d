# SPDX-License-Identifier: MIT -- docs: docs/hem.md
"""The HER + hEM hybrid of Hindsight Expectation Maximization (Tang & Kucukelbir, AISTATS 2021), Sec. 4.4: DDPG +
HER as her_ddpg.py runs it, with hEM's M-step term added to the actor's loss. hem.py is hEM itself.

Idea: on the Fetch tasks exploration is hard, so the hybrid collects data as HER does (Gaussian noise plus random
actions) and learns a critic as HER does; the actor gets a second learning signal, hEM's supervised M-step: clone
the executed actions on hindsight goals that they reached, so it still learns where the critic has not.

Equations implemented (each marked in the code):
  critic (HER):  y = clip(r + gamma (1 - d) Q'(s', mu'(s', g'), g'), r_fail/(1 - gamma), r_success/(1 - gamma)),
                 loss mean (Q(s, a, g') - y)^2 on HER batches (relabel probability 1 - 1/(1 + replay_k))
  actor (Sec. 4.4):  L_her + eta L_hem = -mean Q(s, mu(s, g), g) + action_l2 mean (mu/max_u)^2
                 + eta mean ||a - mu(s, g')||^2, the last term on a separate q_h batch (hEM's E-step: g' = ag_{t'},
                 t' ~ U{t+1, ..., L}, relabel probability 1): -log pi of a fixed-sigma Gaussian (sigma^2 = 1/2), up
                 to a constant
  targets:       theta' <- polyak theta' + (1 - polyak) theta, once per iteration
Deviations from the paper (reasons in docs/hem.md): the paper gives only the objective; the deterministic actor and
the separate q_h batch are our reading. Networks are baselines' 3 x 256; one process, not MPI workers.

Usage:
  python hem_hybrid.py --env FetchReach                             # the demo: 5k env steps
  python hem_hybrid.py --env FetchPush --num-envs 16 --batch-size 512 --total-timesteps 1000000
  python hem_hybrid.py --eval-checkpoint runs/<run>/hem_hybrid.pt --n-test-rollouts 100 [--capture-video]
"""

import copy
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
from torch.utils.tensorboard import SummaryWriter

import envs

ALGO = "hem_hybrid"


@dataclass
class Args:
    env: str = "FetchReach"
    """goal env: a short name (FetchReach, BitFlip:n=10, Navigation:k=5, FourRoomMaze, ...) or a Gymnasium id"""
    eta: float = 0.1
    """weight of hEM's M-step term in the actor loss (Sec. 4.4: 0.1, 0.2 or 0.5; 0.1 "works uniformly well")"""
    seed: int = 1
    """seed of random, numpy, torch and the envs"""
    total_timesteps: int = 5_000
    """training env steps, all envs counted"""
    num_envs: int = 2
    """parallel envs, stepped in lockstep; an iteration (HER's cycle) collects one episode from each"""
    eval_interval: int = 500
    """env steps between evaluations; one more ends the run"""
    n_test_rollouts: int = 10
    """deterministic evaluation episodes (the actor's action, no noise)"""
    n_batches: int = 40
    """gradient steps per iteration"""
    batch_size: int = 256
    """samples per gradient step"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions"""
    replay_k: int = 4
    """relabelled : original goals ratio of the critic's HER batches (the M-step batch always relabels)"""
    gamma: Optional[float] = None
    """discount; unset: 1 - 1/T (0.98 for T = 50)"""
    polyak: float = 0.95
    """target smoothing: target <- polyak * target + (1 - polyak) * online, once per iteration"""
    lr_actor: float = 1e-3
    """Adam learning rate of the actor"""
    lr_critic: float = 1e-3
    """Adam learning rate of the critic"""
    action_l2: float = 1.0
    """weight of the actor's action penalty mean((mu / max_u)^2)"""
    noise_eps: float = 0.2
    """std of the Gaussian exploration noise, in units of max_u (HER's)"""
    random_eps: float = 0.3
    """probability of a uniformly random action while collecting (HER's)"""
    hidden_dims: List[int] = field(default_factory=lambda: [256, 256, 256])
    """hidden layer widths of actor and critic, ReLU"""
    clip_obs: float = 200.0
    """observations and goals are clipped to +-clip_obs before normalising"""
    clip_range: float = 5.0
    """normalised inputs are clipped to +-clip_range"""
    norm_eps: float = 0.01
    """lower bound of the normaliser's std"""
    save_model: bool = False
    """write policy, normalisers and args to runs/<run>/hem_hybrid.pt after each evaluation and at the end"""
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
    """mu(s, g) = max_u tanh(MLP([o_norm, g_norm]))."""

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
    actions: np.ndarray  # the executed actions
    rewards: np.ndarray
    next_obs: np.ndarray
    g: np.ndarray
    dones: np.ndarray


def td_target(r, d, q_next, gamma, rewards=(-1.0, 0.0)):
    """y = r + gamma (1 - d) Q'(s', pi'(s')), clipped to the range of returns [r_fail, r_success] / (1 - gamma)."""
    return (r + gamma * (1 - d) * q_next).clamp(rewards[0] / (1 - gamma), rewards[1] / (1 - gamma))


def soft_update(net, target, polyak):
    """target <- polyak * target + (1 - polyak) * net."""
    with torch.no_grad():
        for p, p_t in zip(net.parameters(), target.parameters()):
            p_t.lerp_(p, 1 - polyak)


def dims(env):
    """(obs_dim, goal_dim, act_dim, max_u)."""
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    return obs_dim, goal_dim, env.action_space.shape[0], float(env.action_space.high[0])


def make_networks(env, args, device):
    """Actor, critic, their targets (copies) and their Adam optimisers."""
    obs_dim, goal_dim, act_dim, max_u = dims(env)
    actor = Actor(obs_dim, goal_dim, act_dim, args.hidden_dims, max_u).to(device)
    critic = Critic(obs_dim, goal_dim, act_dim, args.hidden_dims, max_u).to(device)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.lr_actor, fused=True)  # fused: faster updates
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr_critic, fused=True)
    return actor, critic, copy.deepcopy(actor), copy.deepcopy(critic), actor_opt, critic_opt


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

    def sample(self, batch_size, relabel_p, episodes=None):
        """g' = ag_{t'}, t' ~ U{t+1 .. L} with probability relabel_p, else the episode's goal. relabel_p = 1 is hEM's
        q_h, every sample a success for its goal; the critic's HER batches use 1 - 1/(1 + replay_k)."""
        e = self.rng.integers(0, self.size, batch_size) if episodes is None else self.rng.choice(episodes, batch_size)
        L = self.ep_len[e]
        t = (self.rng.random(batch_size) * L).astype(np.int64)
        t_goal = t + 1 + (self.rng.random(batch_size) * (L - t)).astype(np.int64)  # t' > t: a_t must matter
        her = self.rng.random(batch_size) < relabel_p
        g = np.where(her[:, None], self.ag[e, t_goal], self.g[e, t])
        ag_next = self.ag[e, t + 1]
        r = self.env.compute_reward(ag_next, g, None).astype(np.float32)
        d = np.broadcast_to(self.env.compute_terminated(ag_next, g, None), r.shape).astype(np.float32)
        return Batch(self.obs[e, t], self.actions[e, t], r, self.obs[e, t + 1], g, d)


# ---- hEM hybrid: what differs from her_ddpg.py ----
def update(batch, hem_batch, policy, critic, actor_target, critic_target, policy_opt, critic_opt, args, gamma,
           rewards):
    """One gradient step; returns the logged losses: her_ddpg.py's update on HER's batch, with eta x the M-step loss
    on the q_h batch (x_h, a_h) added to the actor's."""
    x_h, a_h = hem_batch
    x, a, r, x2, d = batch
    with torch.no_grad():
        y = td_target(r, d, critic_target(x2, actor_target(x2)), gamma, rewards)
    q = critic(x, a)
    critic_loss = (q - y).pow(2).mean()  # critic: mean squared error to the clipped target
    mu = policy(x)
    critic.requires_grad_(False)  # the actor loss only needs dQ/da, not the critic's weight gradients
    nll = (a_h - policy(x_h)).pow(2).sum(-1).mean()  # -log N(a_h; mu, 1/2) + const: Sec. 4.4's log pi term
    actor_loss = -critic(x, mu).mean() + args.action_l2 * (mu / policy.max_u).pow(2).mean() + args.eta * nll
    critic.requires_grad_(True)
    critic_opt.zero_grad()  # both gradients from the same critic, then both steps, as her_ddpg.py
    policy_opt.zero_grad()
    critic_loss.backward()
    actor_loss.backward()
    critic_opt.step()
    policy_opt.step()
    return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "q_values": q.mean().item(),
            "nll": nll.item()}


def select_action(policy, x, args, rng, max_u, *, explore):
    """Greedy (mu) when not exploring; else HER's exploration (Sec. 4.4: the hybrid collects as HER does)."""
    with torch.no_grad():
        mu = policy(x).cpu().numpy()
    if not explore:
        return mu
    a = np.clip(mu + args.noise_eps * max_u * rng.standard_normal(mu.shape), -max_u, max_u)  # Gaussian noise
    random_a = rng.uniform(-max_u, max_u, mu.shape)
    return np.where(rng.random((len(mu), 1)) < args.random_eps, random_a, a).astype(np.float32)  # random_eps uniform


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
    space = vec_env.single_action_space
    obs = np.zeros((n, T + 1, ob["observation"].shape[-1]), np.float32)
    ag = np.zeros((n, T + 1, ob["achieved_goal"].shape[-1]), np.float32)
    g = np.zeros((n, T, ob["desired_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T, space.shape[0]), np.float32)
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
    """Deterministic actor; success = is_success at each episode's final step. Returns (success rate, return)."""
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
    """One-line errors for envs and settings this script cannot handle; returns the env's (r_fail, r_success)."""
    space = env.action_space
    goals = [env.observation_space[k] for k in ("observation", "achieved_goal", "desired_goal")]
    if not isinstance(space, gym.spaces.Box):
        raise envs.EnvError(f"{args.env} has {space} actions; the hybrid is DDPG and needs a Box")
    if not (np.all(space.high == space.high[0]) and np.all(space.low == -space.high)):
        raise envs.EnvError(f"{args.env}: the hybrid needs a symmetric action box [-max_u, max_u]^n, got {space}")
    if not all(isinstance(s, gym.spaces.Box) for s in goals) or goals[1].shape != goals[2].shape:
        raise envs.EnvError(f"{args.env}: goals must be flat vectors, achieved and desired of one shape, else they "
                            "cannot be relabelled")
    for name in ("total_timesteps", "num_envs", "n_batches", "batch_size", "buffer_size",
                 "eval_interval", "n_test_rollouts"):
        if getattr(args, name) < (0 if name == "n_batches" else 1):
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not (0 <= args.random_eps <= 1 and 0 <= args.polyak <= 1) or min(args.eta, args.noise_eps, args.replay_k) < 0:
        raise envs.EnvError("--random-eps and --polyak must lie in [0, 1]; --eta, --noise-eps, --replay-k must be >= 0")
    return envs.sparse_rewards(env)  # the target clip follows the env's reward convention; dense: refused


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
    policy = make_networks(env, saved, "cpu")[0]
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
    if args.eval_checkpoint:
        return load_and_evaluate(args)
    device, rng, env_seed = seed_everything(args)

    # envs: one in this process for the spaces and the vectorised reward, num_envs for collecting
    env = make_env(args)
    rewards = check_env(env, args)
    T = envs.horizon(env)
    obs_dim, goal_dim, act_dim, max_u = dims(env)
    gamma = args.gamma if args.gamma is not None else 1 - 1 / T
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=env_seed)  # env i: env_seed + i

    # networks, normalisers, buffer
    policy, critic, actor_target, critic_target, policy_opt, critic_opt = make_networks(env, args, device)
    o_norm = Normalizer(obs_dim, args.norm_eps, args.clip_obs, args.clip_range)
    g_norm = Normalizer(goal_dim, args.norm_eps, args.clip_obs, args.clip_range)
    buffer = EpisodeBuffer(args.buffer_size, T, obs_dim, goal_dim, act_dim, env.unwrapped, rng)
    her_p = 1 - 1 / (1 + args.replay_k)  # relabel probability of the normaliser's and critic's data
    run_dir, writer = start_run(args, env)
    ckpt_path = f"{run_dir}/{ALGO}.pt"

    def inputs(o, g):
        return torch.as_tensor(np.concatenate([o_norm(o), g_norm(g)], -1), device=device)

    global_step, grad_steps, next_eval, start_time, sr, losses = 0, 0, args.eval_interval, time.time(), 0.0, {}
    try:
        while global_step < args.total_timesteps:
            # collect one episode per env with HER's exploration, store it, update the normalisers
            ep = rollout(vec_env, policy, o_norm, g_norm, T, device, args, rng, max_u, explore=True)
            new = buffer.store(ep.obs, ep.ag, ep.g, ep.actions, ep.ep_len)
            global_step += int(ep.ep_len.sum())
            # normaliser statistics come from relabelled samples of the new episodes (goal stats see g')
            sample = buffer.sample(int(ep.ep_len.sum()), her_p, episodes=new)
            o_norm.update(sample.obs)
            g_norm.update(sample.g)
            writer.add_scalar("charts/success_rate", np.mean(ep.success), global_step)
            writer.add_scalar("charts/episodic_return", np.mean(ep.ret), global_step)

            # gradient steps: each draws HER's batch for the critic and the actor's Q term, and a fresh q_h batch
            # (hEM's E-step, relabel probability 1) for the actor's M-step term
            for _ in range(args.n_batches):
                h, b = buffer.sample(args.batch_size, 1.0), buffer.sample(args.batch_size, her_p)
                batch = (inputs(b.obs, b.g), *(torch.as_tensor(v, device=device) for v in (b.actions, b.rewards)),
                         inputs(b.next_obs, b.g), torch.as_tensor(b.dones, device=device))
                losses = update(batch, (inputs(h.obs, h.g), torch.as_tensor(h.actions, device=device)), policy, critic,
                                actor_target, critic_target, policy_opt, critic_opt, args, gamma, rewards)
                grad_steps += 1
            soft_update(policy, actor_target, args.polyak)  # both targets once per iteration, as her_ddpg.py per cycle
            soft_update(critic, critic_target, args.polyak)
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
