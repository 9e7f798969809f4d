"""hEM: Hindsight Expectation Maximization (Tang & Kucukelbir, AISTATS 2021), with the HER + hEM hybrid (section 4.4).

Idea: read goal-conditioned RL with a sparse success reward as inference, and maximise a lower bound (ELBO) on the
log-probability of success by EM. The E-step picks a variational distribution q over (trajectory, goal) pairs; the
best one puts its mass on *successful* pairs, and hindsight relabeling samples exactly that: take a trajectory and
name as its goal something it achieved. The M-step then maximises log pi(a | s, g) on those pairs: supervised
learning, with no critic, no reward weighting and no importance ratio. Off-policy: every episode ever collected stays
in the buffer, and a bigger buffer only tightens the bound (Theorem 3).

Equations implemented (each marked in the code):
  E-step (q_h):  (s_t, a_t, g') with g' = ag_{t'}, t' ~ U{t+1, ..., L}: the future strategy with relabel probability 1
  M-step:        Eq. (7)  minimise -mean log pi(a_t | s_t, g') over a minibatch of q_h samples, a few Adam steps
  policies:      discrete  pi = Categorical(softmax(MLP(s, g))), collected eps-uniform (eps = 0.2)
                 continuous pi = N(mu(s, g), sigma^2) with one global learnable sigma, collected as
                 a' = clip(a + N(0, sigma_a^2)), a ~ pi, and a' (the executed action) is the one cloned
  hybrid (--eta > 0, Sec. 4.4):  DDPG + HER exactly as her_ddpg.py (HER's exploration, critic, target clip), with the
                 actor loss -mean Q(s, mu(s, g), g) + action_l2 mean (mu/max_u)^2 + eta mean ||a - mu(s, g')||^2
                 on a separate q_h batch: -log pi of a fixed-sigma Gaussian (sigma^2 = 1/2), up to a constant
Deviations from the paper (../shared/specs/hem.md §5): Algorithm 1's "grad log sum log pi" is read as
grad sum log pi (a typo); the appendix's 5-unit hidden layers are read as 256 units, 3 layers; the Gaussian mean is
tanh-squashed into the action box; inputs go through HER's running normalisers (the paper does not say); one
process collects N episodes per iteration where the paper ran about 30 MPI workers; the number of gradient steps per
iteration, which the paper does not state, is U = 20 for N = 10 episodes of 50 steps (more over-fits the noisy
clones of continuous actions). Fetch envs never end early (Gymnasium's convention); the toy tasks end on success.

Usage:
  python hem.py --env FetchReach                                  # the demo: 5k env steps, greedy success ~1
  python hem.py --env BitFlip --n-episodes 20 --n-batches 50 --batch-size 128 --total-timesteps 10000
  python hem.py --env Navigation:k=5 --n-episodes 20 --n-batches 50 --total-timesteps 20000
  python hem.py --env FetchPush --eta 0.1 --total-timesteps 300000   # the HER + hEM hybrid (HER's schedule)
  python hem.py --eval-checkpoint runs/<run>/hem.pt --n-test-rollouts 100 [--capture-video]
"""

import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions import Categorical, Independent, Normal
from torch.utils.tensorboard import SummaryWriter

import envs


@dataclass
class Args:
    env: str = "FetchReach"
    """goal env: a short name (FetchReach, BitFlip:n=10, Navigation:k=5, FourRoomMaze, ...) or a Gymnasium id"""
    eta: float = 0.0
    """0: hEM. > 0: the HER + hEM hybrid, DDPG + HER with eta x the M-step loss added to the actor (paper: 0.1)"""
    seed: int = 1
    """seed of random, numpy, torch and the envs"""
    total_timesteps: int = 5_000
    """training env steps, all envs counted"""
    num_envs: int = 2
    """parallel envs, stepped in lockstep; episodes are collected num_envs at a time"""
    n_episodes: Optional[int] = None
    """N, episodes collected per iteration; default 10 (hEM), or num_envs for the hybrid (HER's cycle)"""
    n_batches: Optional[int] = None
    """U, gradient steps per iteration; default 20 (hEM) or 40 (hybrid, HER's)"""
    batch_size: int = 256
    """samples per gradient step"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions (hEM keeps everything: a bigger buffer tightens the bound, Theorem 3)"""
    on_policy: bool = False
    """hEM only: empty the buffer before each iteration's episodes (the setting of the paper's Theorem 2)"""
    lr: float = 1e-3
    """Adam learning rate of the policy (the actor, in the hybrid)"""
    hidden_dim: int = 256
    """units per hidden layer (3 layers, ReLU)"""
    sigma_a: float = 0.5
    """hEM, continuous: std of the extra Gaussian exploration noise added to a ~ pi, in units of max_u"""
    eps: float = 0.2
    """hEM, discrete: probability of a uniformly random action while collecting"""
    replay_k: int = 4
    """hybrid: relabelled : original goals ratio of the critic's HER batches (the M-step batch always relabels)"""
    gamma: Optional[float] = None
    """hybrid: discount; default 1 - 1/T (0.98 for T = 50)"""
    polyak: float = 0.95
    """hybrid: target <- polyak * target + (1 - polyak) * main, once per iteration"""
    lr_critic: float = 1e-3
    """hybrid: Adam learning rate of the critic"""
    action_l2: float = 1.0
    """hybrid: weight of the actor's action penalty mean((mu / max_u)^2)"""
    noise_eps: float = 0.2
    """hybrid: std of HER's Gaussian exploration noise, in units of max_u"""
    random_eps: float = 0.3
    """hybrid: probability of a uniformly random action while collecting"""
    clip_obs: float = 200.0
    """observations and goals are clipped to +-clip_obs before normalising"""
    clip_range: float = 5.0
    """normalised inputs are clipped to +-clip_range"""
    norm_eps: float = 0.01
    """lower bound of the normaliser's std"""
    eval_interval: int = 500
    """env steps between evaluations (one evaluation at the end of each iteration that crosses a multiple)"""
    n_test_rollouts: int = 10
    """greedy evaluation episodes per evaluation"""
    save_model: bool = False
    """write policy, normalisers and args to runs/<run>/hem.pt after each evaluation and at the end"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint for --n-test-rollouts episodes instead of training"""
    capture_video: bool = False
    """with --eval-checkpoint: save the first evaluation episode as a GIF next to the checkpoint"""
    torch_threads: int = 0
    """PyTorch CPU threads; 0 keeps PyTorch's default; use 1 when other runs share the cores (several threads per
    run then slow small networks several-fold)"""
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
        return {"sum": self.sum, "sumsq": self.sumsq, "count": self.count, "mean": self.mean, "std": self.std}

    def load_state_dict(self, state):
        self.sum, self.sumsq, self.count = state["sum"], state["sumsq"], state["count"]
        self.mean, self.std = state["mean"], state["std"]


def mlp(in_dim, out_dim, hidden_dim):
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                         nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class Actor(nn.Module):
    """mu(s, g) = max_u tanh(MLP([o_norm, g_norm])): the hybrid's deterministic actor, and the Gaussian's mean."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dim, max_u):
        super().__init__()
        self.net, self.max_u = mlp(obs_dim + goal_dim, act_dim, hidden_dim), max_u

    def forward(self, x):
        return self.max_u * torch.tanh(self.net(x))


class GaussianPolicy(Actor):
    """pi(a | s, g) = N(mu(s, g), sigma^2) with one global, learnable sigma per action dimension (hEM App. C)."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dim, max_u):
        super().__init__(obs_dim, goal_dim, act_dim, hidden_dim, max_u)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def std(self):
        return self.log_std.clamp(-5.0, 1.0).exp()

    def dist(self, x):
        return Independent(Normal(self(x), self.std()), 1)  # log_prob sums over action dimensions


class CategoricalPolicy(nn.Module):
    """pi(a | s, g) = Categorical(softmax(MLP([o_norm, g_norm]))); forward returns the logits."""

    def __init__(self, obs_dim, goal_dim, n_actions, hidden_dim):
        super().__init__()
        self.net = mlp(obs_dim + goal_dim, n_actions, hidden_dim)

    def forward(self, x):
        return self.net(x)

    def dist(self, x):
        return Categorical(logits=self(x))


class Critic(nn.Module):
    """Hybrid only: Q(s, a, g) = MLP([o_norm, g_norm, a / max_u])."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dim, max_u):
        super().__init__()
        self.net, self.max_u = mlp(obs_dim + goal_dim + act_dim, 1, hidden_dim), max_u

    def forward(self, x, a):
        return self.net(torch.cat([x, a / self.max_u], -1)).squeeze(-1)


class EpisodeBuffer:
    """Whole episodes as arrays obs[E, T+1], ag[E, T+1], g[E, T], actions[E, T]; sample() is the E-step.

    Episodes that end early (tasks that terminate on success) keep their length in ep_len; steps past it are unused.
    Discrete actions are stored as one float column holding the action index.
    """

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

    def sample(self, batch_size, relabel_p=1.0, episodes=None):
        """(s_t, a_t, r, s_{t+1}, g', d). relabel_p = 1 is q_h: g' = ag_{t'}, t' ~ U{t+1 .. L}, every sample a success
        for its goal; the hybrid's critic uses HER's relabel_p = 1 - 1/(1 + replay_k) and keeps the other goals."""
        e = self.rng.integers(0, self.size, batch_size) if episodes is None else self.rng.choice(episodes, batch_size)
        L = self.ep_len[e]
        t = (self.rng.random(batch_size) * L).astype(np.int64)
        t_goal = t + 1 + (self.rng.random(batch_size) * (L - t)).astype(np.int64)  # t' > t: a_t must matter
        her = self.rng.random(batch_size) < relabel_p
        g = np.where(her[:, None], self.ag[e, t_goal], self.g[e, t])
        ag_next = self.ag[e, t + 1]
        r = self.env.compute_reward(ag_next, g, None).astype(np.float32)
        d = np.broadcast_to(self.env.compute_terminated(ag_next, g, None), r.shape).astype(np.float32)
        return self.obs[e, t], self.actions[e, t], r, self.obs[e, t + 1], g, d


def hem_loss(policy, x, a):
    """Eq. (7) M-step: -mean log pi(a | s, g') on q_h samples; a is the executed action (an index if discrete)."""
    if isinstance(policy, CategoricalPolicy):
        a = a.long().squeeze(-1)
    return -policy.dist(x).log_prob(a).mean()


def td_target(r, d, q_next, gamma):
    """y = r + gamma (1 - d) Q'(s', pi'(s')), clipped to [-1/(1-gamma), 0]: the range of returns of -1/0 rewards."""
    return (r + gamma * (1 - d) * q_next).clamp(-1 / (1 - gamma), 0)


def hybrid_update(batch, hem_batch, actor, critic, actor_target, critic_target, actor_opt, critic_opt, args, gamma):
    """One DDPG + HER step (as her_ddpg.py) whose actor loss also has eta x the M-step loss on a q_h batch."""
    x, a, r, x2, d = batch
    with torch.no_grad():
        y = td_target(r, d, critic_target(x2, actor_target(x2)), gamma)
    q = critic(x, a)
    critic_loss = (q - y).pow(2).mean()  # critic: mean squared error to the clipped target
    critic_opt.zero_grad()
    critic_loss.backward()
    critic_opt.step()

    pi = actor(x)
    critic.requires_grad_(False)  # the actor loss only needs dQ/da, not the critic's weight gradients
    x_h, a_h = hem_batch
    bc_loss = (a_h - actor(x_h)).pow(2).sum(-1).mean()  # -log N(a_h; mu, 1/2) + const: Sec. 4.4's log pi term
    actor_loss = -critic(x, pi).mean() + args.action_l2 * (pi / actor.max_u).pow(2).mean() + args.eta * bc_loss
    critic.requires_grad_(True)
    actor_opt.zero_grad()
    actor_loss.backward()
    actor_opt.step()
    return critic_loss.item(), actor_loss.item(), q.mean().item(), bc_loss.item()


def select_action(policy, x, explore, args, rng, max_u):
    """Greedy when not exploring; else the paper's exploration for hEM (or HER's for the hybrid)."""
    with torch.no_grad():
        if isinstance(policy, CategoricalPolicy):
            probs = torch.softmax(policy(x), -1).cpu().numpy()
            if not explore:
                return probs.argmax(-1)
            a = (rng.random((len(probs), 1)) < probs.cumsum(-1)).argmax(-1)  # a ~ pi, by inverse CDF
            random_a = rng.integers(0, probs.shape[-1], len(probs))
            return np.where(rng.random(len(probs)) < args.eps, random_a, a)  # eps-uniform
        mu = policy(x).cpu().numpy()
        if not explore:
            return mu
        if args.eta > 0:  # the hybrid collects as HER does: Gaussian noise, then random_eps uniform actions
            a = np.clip(mu + args.noise_eps * max_u * rng.standard_normal(mu.shape), -max_u, max_u)
            random_a = rng.uniform(-max_u, max_u, mu.shape)
            return np.where(rng.random((len(mu), 1)) < args.random_eps, random_a, a).astype(np.float32)
        a = mu + policy.std().cpu().numpy() * rng.standard_normal(mu.shape)  # a ~ N(mu, sigma^2)
        a = a + args.sigma_a * max_u * rng.standard_normal(mu.shape)  # a' = a + N(0, sigma_a^2)
        return np.clip(a, -max_u, max_u).astype(np.float32)


def rollout(vec_env, policy, o_norm, g_norm, T, device, explore, args, rng, max_u):
    """One episode in each env (reset together, stepped in lockstep); returns the episode arrays and stats."""
    n = vec_env.num_envs
    ob, _ = vec_env.reset()
    space = vec_env.single_action_space
    obs = np.zeros((n, T + 1, ob["observation"].shape[-1]), np.float32)
    ag = np.zeros((n, T + 1, ob["achieved_goal"].shape[-1]), np.float32)
    g = np.zeros((n, T, ob["desired_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T, space.shape[0] if isinstance(space, gym.spaces.Box) else 1), np.float32)
    ep_len, success, ret = np.full(n, T), np.zeros(n), np.zeros(n)
    running = np.ones(n, bool)
    obs[:, 0], ag[:, 0] = ob["observation"], ob["achieved_goal"]
    for t in range(T):
        g[:, t] = ob["desired_goal"]
        x = np.concatenate([o_norm(ob["observation"]), g_norm(ob["desired_goal"])], -1)
        a = select_action(policy, torch.as_tensor(x, device=device), explore, args, rng, max_u)
        ob, r, terminated, truncated, info = vec_env.step(a)
        actions[:, t], obs[:, t + 1], ag[:, t + 1] = a.reshape(n, -1), ob["observation"], ob["achieved_goal"]
        ret += r * running
        success = np.where(running, info["is_success"], success)  # success at the episode's final step
        ended = running & (terminated | (t == T - 1))
        ep_len[ended & terminated] = t + 1
        running &= ~ended
        if not running.any():
            break
    return obs, ag, g, actions, ep_len, success, ret


def evaluate(vec_env, policy, o_norm, g_norm, T, device, n_episodes, args, rng, max_u):
    """Greedy policy (argmax or the mean); success = is_success at each episode's final step."""
    successes, returns = [], []
    while len(successes) < n_episodes:
        *_, success, ret = rollout(vec_env, policy, o_norm, g_norm, T, device, False, args, rng, max_u)
        successes += list(success)
        returns += list(ret)
    return float(np.mean(successes[:n_episodes])), float(np.mean(returns[:n_episodes]))


def make_vec_env(args, n):
    """n copies of the goal env. rollout() resets them all at each call's start; an env whose episode ends early
    is auto-reset by the next step, and rollout() stores nothing past that episode's end."""
    return gym.vector.SyncVectorEnv([lambda: envs.make(args.env) for _ in range(n)])


def make_policy(env, args):
    """Categorical for Discrete actions, Gaussian for a Box; the hybrid's deterministic Actor."""
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    if isinstance(env.action_space, gym.spaces.Discrete):
        return CategoricalPolicy(obs_dim, goal_dim, int(env.action_space.n), args.hidden_dim)
    cls = Actor if args.eta > 0 else GaussianPolicy
    return cls(obs_dim, goal_dim, env.action_space.shape[0], args.hidden_dim, float(env.action_space.high[0]))


def check_env(env, args):
    """One-line errors for envs and settings this script cannot handle."""
    space = env.action_space
    if isinstance(space, gym.spaces.Box):
        if not (np.all(space.high == space.high[0]) and np.all(space.low == -space.high)):
            raise envs.EnvError(f"{args.env}: hEM here needs a symmetric action box [-max_u, max_u]^n, got {space}")
    elif not isinstance(space, gym.spaces.Discrete):
        raise envs.EnvError(f"{args.env} has {space} actions; hEM here handles Discrete or Box actions")
    elif args.eta > 0:
        raise envs.EnvError(f"{args.env} has discrete actions; the hybrid (--eta > 0) is DDPG and needs a Box")
    ob_space = env.observation_space
    if ob_space["achieved_goal"].shape != ob_space["desired_goal"].shape:
        raise envs.EnvError(f"{args.env}: achieved and desired goals differ in shape, so they cannot be relabelled")
    for name in ("total_timesteps", "num_envs", "n_episodes", "n_batches", "batch_size", "buffer_size",
                 "eval_interval", "n_test_rollouts"):
        if getattr(args, name) < (0 if name == "n_batches" else 1):
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not (0 <= args.eps <= 1 and 0 <= args.random_eps <= 1 and 0 <= args.polyak <= 1) or args.eta < 0:
        raise envs.EnvError("--eps, --random-eps and --polyak must lie in [0, 1], and --eta must be >= 0")
    if args.on_policy and args.eta > 0:
        raise envs.EnvError("--on-policy is an hEM setting; the hybrid's critic learns off-policy")


def save_checkpoint(path, policy, o_norm, g_norm, args):
    torch.save({"policy": policy.state_dict(), "o_norm": o_norm.state_dict(), "g_norm": g_norm.state_dict(),
                "args": asdict(args)}, path)


def load_and_evaluate(args):
    """Evaluate a saved policy: success rate over --n-test-rollouts episodes, optionally a GIF of the first one."""
    if not os.path.isfile(args.eval_checkpoint):
        raise envs.EnvError(f"no checkpoint at {args.eval_checkpoint}")
    if args.capture_video and "DISPLAY" not in os.environ:
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering; must be set before MuJoCo loads
    ckpt = torch.load(args.eval_checkpoint, map_location="cpu", weights_only=False)
    saved = Args(**ckpt["args"])
    env = envs.make(saved.env)
    policy = make_policy(env, saved)
    policy.load_state_dict(ckpt["policy"])
    dims = [env.observation_space[k].shape[0] for k in ("observation", "desired_goal")]
    o_norm = Normalizer(dims[0], saved.norm_eps, saved.clip_obs, saved.clip_range)
    g_norm = Normalizer(dims[1], saved.norm_eps, saved.clip_obs, saved.clip_range)
    o_norm.load_state_dict(ckpt["o_norm"])
    g_norm.load_state_dict(ckpt["g_norm"])
    max_u = float(env.action_space.high[0]) if isinstance(env.action_space, gym.spaces.Box) else 1.0
    vec_env = make_vec_env(saved, saved.num_envs)
    vec_env.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    sr, ret = evaluate(vec_env, policy, o_norm, g_norm, envs.horizon(env), "cpu", args.n_test_rollouts, saved, rng,
                       max_u)
    print(f"{saved.env}: success rate {sr:.3f}, mean return {ret:.2f} over {args.n_test_rollouts} episodes")
    if args.capture_video:
        record_gif(saved, policy, o_norm, g_norm, args.eval_checkpoint.rsplit(".", 1)[0] + ".gif", args.seed, max_u)
    vec_env.close()
    return sr


def record_gif(args, policy, o_norm, g_norm, path, seed, max_u):
    import imageio  # installed with gymnasium-robotics

    try:
        env = envs.make(args.env, render_mode="rgb_array")
        ob, _ = env.reset(seed=seed)
        frames = [env.render()]
    except Exception as e:  # an env without rgb_array rendering, or no OpenGL on this machine
        print(f"no video: {args.env} cannot render here ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
        return
    done = False
    while not done:
        x = np.concatenate([o_norm(ob["observation"]), g_norm(ob["desired_goal"])])[None]
        a = select_action(policy, torch.as_tensor(x), False, args, None, max_u)[0]
        ob, _, terminated, truncated, _ = env.step(a)
        frames.append(env.render())
        done = terminated or truncated
    imageio.mimsave(path, frames, duration=40)
    print(f"video: {path}")


def main(args):
    if args.eval_checkpoint:
        return load_and_evaluate(args)
    hybrid = args.eta > 0
    if args.n_episodes is None:
        args.n_episodes = args.num_envs if hybrid else 10
    if args.n_batches is None:
        args.n_batches = 40 if hybrid else 20
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
    env = envs.make(args.env)
    check_env(env, args)
    T = envs.horizon(env)
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    act_dim, max_u = (1, 1.0) if discrete else (env.action_space.shape[0], float(env.action_space.high[0]))
    gamma = args.gamma if args.gamma is not None else 1 - 1 / T
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=args.seed)

    # networks, optimisers, normalisers, buffer; the critic and the targets only for the hybrid
    policy = make_policy(env, args).to(device)
    policy_opt = torch.optim.Adam(policy.parameters(), lr=args.lr, fused=True)  # fused: ~30% faster updates
    if hybrid:
        critic = Critic(obs_dim, goal_dim, act_dim, args.hidden_dim, max_u).to(device)
        actor_target = make_policy(env, args).to(device)
        critic_target = Critic(obs_dim, goal_dim, act_dim, args.hidden_dim, max_u).to(device)
        actor_target.load_state_dict(policy.state_dict())
        critic_target.load_state_dict(critic.state_dict())
        critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr_critic, fused=True)
    o_norm = Normalizer(obs_dim, args.norm_eps, args.clip_obs, args.clip_range)
    g_norm = Normalizer(goal_dim, args.norm_eps, args.clip_obs, args.clip_range)
    buffer = EpisodeBuffer(args.buffer_size, T, obs_dim, goal_dim, act_dim, env.unwrapped, rng)
    her_p = 1 - 1 / (1 + args.replay_k)  # the hybrid critic's HER relabel probability (0.8)

    run_name = f"{args.env.replace(':', '_')}__hem__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    ckpt_path = f"runs/{run_name}/hem.pt"

    def to_tensor(*arrays):
        return [torch.as_tensor(a, device=device) for a in arrays]

    def inputs(o, g):
        return np.concatenate([o_norm(o), g_norm(g)], -1)

    global_step, grad_steps, epoch, start_time, sr = 0, 0, 0, time.time(), 0.0
    try:
        while global_step < args.total_timesteps:
            # collect N episodes with exploration (Alg. 1 line 3), store them, update the normalisers
            if args.on_policy:
                buffer.clear()
            steps, successes, returns = 0, [], []
            for _ in range(-(-args.n_episodes // args.num_envs)):
                obs, ag, g, actions, ep_len, success, ret = rollout(vec_env, policy, o_norm, g_norm, T, device, True,
                                                                    args, rng, max_u)
                new = buffer.store(obs, ag, g, actions, ep_len)
                steps += int(ep_len.sum())
                # normaliser statistics come from relabelled samples of the new episodes (goal stats see g')
                o_s, _, _, _, g_s, _ = buffer.sample(int(ep_len.sum()), her_p if hybrid else 1.0, episodes=new)
                o_norm.update(o_s)
                g_norm.update(g_s)
                successes += list(success)
                returns += list(ret)
            global_step += steps
            writer.add_scalar("charts/success_rate", np.mean(successes), global_step)
            writer.add_scalar("charts/episodic_return", np.mean(returns), global_step)

            # U gradient steps (Alg. 1 lines 4-5): each draws a fresh q_h minibatch (E-step) and steps the M-step loss
            for _ in range(args.n_batches):
                grad_steps += 1
                o_h, a_h, _, _, g_h, _ = buffer.sample(args.batch_size, 1.0)  # q_h: relabel probability 1
                x_h, a_h = to_tensor(inputs(o_h, g_h), a_h)
                if not hybrid:
                    loss = hem_loss(policy, x_h, a_h)
                    policy_opt.zero_grad()
                    loss.backward()
                    policy_opt.step()
                    continue
                o, a, r, o2, g_b, d = buffer.sample(args.batch_size, her_p)  # HER's batch for critic and Q term
                x, x2 = inputs(o, g_b), inputs(o2, g_b)
                losses = hybrid_update(to_tensor(x, a, r, x2, d), (x_h, a_h), policy, critic, actor_target,
                                       critic_target, policy_opt, critic_opt, args, gamma)
            if hybrid:
                with torch.no_grad():
                    for net, target in ((policy, actor_target), (critic, critic_target)):
                        for p, p_t in zip(net.parameters(), target.parameters()):
                            p_t.lerp_(p, 1 - args.polyak)  # p_t = polyak p_t + (1 - polyak) p
            if global_step // args.eval_interval == (global_step - steps) // args.eval_interval and \
                    global_step < args.total_timesteps:
                continue

            # every eval_interval env steps and at the end: log, evaluate the greedy policy, checkpoint
            epoch += 1
            if args.n_batches > 0 and hybrid:
                writer.add_scalar("losses/critic_loss", losses[0], global_step)
                writer.add_scalar("losses/actor_loss", losses[1], global_step)
                writer.add_scalar("losses/q_values", losses[2], global_step)
                writer.add_scalar("losses/nll", losses[3], global_step)
            elif args.n_batches > 0:
                writer.add_scalar("losses/nll", loss.item(), global_step)
            if isinstance(policy, GaussianPolicy):
                writer.add_scalar("stats/policy_std", policy.std().mean().item(), global_step)
            sr, eval_ret = evaluate(vec_env, policy, o_norm, g_norm, T, device, args.n_test_rollouts, args, rng,
                                    max_u)
            elapsed = time.time() - start_time
            sps = int(global_step / elapsed)
            writer.add_scalar("eval/success_rate", sr, global_step)
            writer.add_scalar("eval/episodic_return", eval_ret, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("charts/gradient_steps", grad_steps, global_step)
            writer.add_scalar("charts/episodes", buffer.size, global_step)
            left = elapsed / global_step * max(args.total_timesteps - global_step, 0)
            print(f"epoch {epoch:>3} | step {global_step:>8}/{args.total_timesteps} | success {sr:.2f} | "
                  f"return {eval_ret:7.2f} | SPS {sps:>5} | {elapsed:5.0f}s elapsed, ~{left:.0f}s left", flush=True)
            if args.save_model:
                save_checkpoint(ckpt_path, policy, o_norm, g_norm, args)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}")
    finally:
        vec_env.close()
        env.close()
        writer.close()
    if args.save_model:
        save_checkpoint(ckpt_path, policy, o_norm, g_norm, args)
        print(f"checkpoint: {ckpt_path}\nevaluate it: python hem.py --eval-checkpoint {ckpt_path}")
    return sr


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminated run saves like Ctrl-C does
    try:
        main(tyro.cli(Args))
    except envs.EnvError as e:
        sys.exit(f"error: {e}")
