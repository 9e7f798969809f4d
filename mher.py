"""MHER: Model-based Hindsight Experience Replay (Yang et al., 2021), with the paper's baselines and ablations.

Idea: HER relabels a transition with a goal the *logged* episode reached later. MHER instead learns a dynamics model
and asks where the *current* policy would go from s_{t+1}: it rolls the target actor forward n steps in the model
under the original goal and relabels with the achieved goal of one of the visited states. Only the goal is
imagined; s_t, a_t, s_{t+1} stay real. Such goals follow the policy as it improves, and drift towards the desired
goal (an implicit curriculum, Fig. 4). The actor also imitates the executed action on these relabelled samples
(goal-conditioned supervised learning, weight alpha), since the logged action did lead towards g'.

Equations implemented (each marked in the code):
  model:        s' = s + std_o * m(norm(s), norm(a)); loss |m - (norm(s') - norm(s))|^2 (Eq. 4; MSE or L1)
  MBR:          s'_0 = s_{t+1}; s'_{j+1} = model(s'_j, clip(pi'(s'_j, g) + 0.2 N(0, I))), j < n, ORIGINAL goal g;
                g' = phi(s'_k), k ~ U{0..n}; used with probability mbr_ratio (0.8), else g is kept (Alg. 1 l. 12-21)
  reward:       r = compute_reward(ag_{t+1}, g')
  critic:       mean (Q(s, a, g') - y)^2, y = clip(r + gamma Q'(s', pi'(s', g'), g'), -1/(1 - gamma), 0)  (Eq. 7)
  actor:        -mean Q(s, pi(s, g'), g') + action_l2 mean (pi/max_u)^2
                + alpha mean_batch[mask mean_dims (a - pi(s, g'))^2]                             (Eq. 6, joint)
--algo picks the method (one file, the paper's comparisons):
  mher       MBR goals for critic and actor, SL term (alpha = 3)
  her        HER future goals (replay_k = 4), no SL;        ddpg       original goals only
  ddpg_mbr   MBR goals, no SL (ablation "no SL");           ddpg_sl    original goals; SL term on MBR goals ("no MBR")
  gcsl       no critic: actor loss mean (a - pi(s, g'))^2 with future goals on every sample
Deviations from the paper, following the official code (../shared/specs/mher.md §1.3-1.6): the SL term averages over
action dimensions and over the whole batch; the rollouts use the target actor with noise 0.2; targets move once
per episode (polyak 0.9); 20 random-action episodes warm the model and normalisers for every method (they count in
--total-timesteps); the action penalty and target clip of baselines HER are kept. The model is the paper's single
MSE network by default (the code's 3-member L1 ensemble is --ensemble 3 --dyn-loss l1). "no MBR" adds the SL term
to the joint actor loss rather than taking a separate step. Fetch runs with T = 100 as in the paper.

Usage:
  python mher.py --env FetchReach                             # the demo: 20 random + 30 episodes, ends solved
  python mher.py --env FetchReach --algo her                  # the HER baseline, same schedule
  python mher.py --env Point2D --n-cycles 1 --total-timesteps 5000 --n-test-rollouts 50
  python mher.py --eval-checkpoint runs/<run>/mher.pt --n-test-rollouts 100 [--capture-video]
"""

import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

import envs


@dataclass
class Args:
    env: str = "FetchReach"
    """goal env: a short name (FetchReach, Point2D, Point2DFourRoom, GoalReacher, ...) or a Gymnasium id"""
    algo: Literal["mher", "her", "ddpg", "ddpg_mbr", "ddpg_sl", "gcsl"] = "mher"
    """the method: MHER, or one of the paper's baselines and ablations (see the docstring's table)"""
    seed: int = 1
    """seed of random, numpy, torch and the envs"""
    total_timesteps: int = 5_000
    """env steps, all envs and the random warm-up episodes counted"""
    episode_length: int = 100
    """T, steps per episode (the paper's 100; Fetch's own default is 50)"""
    num_envs: int = 1
    """parallel envs; one cycle collects one episode from each"""
    n_cycles: int = 5
    """cycles per epoch; an evaluation follows each epoch (paper: 5 FetchReach, 1 Point2D, 15 Reacher)"""
    n_batches: int = 5
    """gradient steps per cycle"""
    batch_size: int = 64
    """transitions per gradient step"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions"""
    random_episodes: int = 20
    """episodes of uniformly random actions before training (the code's random_init), for every method"""
    replay_k: int = 4
    """her: relabelled : original goals ratio of the future strategy (0.8 relabelled); also the normalisers' goals"""
    mbr_ratio: float = 0.8
    """fraction of each batch relabelled by the model (the rest keeps the desired goal)"""
    n_steps: int = 5
    """n, model steps per rollout; g' is drawn from the n + 1 states visited"""
    alpha: float = 3.0
    """weight of the supervised term (mher, ddpg_sl)"""
    gamma: Optional[float] = None
    """discount; default 1 - 1/T (0.99 for T = 100)"""
    polyak: float = 0.9
    """target <- polyak * target + (1 - polyak) * main, once per cycle"""
    lr_actor: float = 1e-3
    """Adam learning rate of the actor"""
    lr_critic: float = 1e-3
    """Adam learning rate of the critic"""
    action_l2: float = 1.0
    """weight of the actor's action penalty mean((pi / max_u)^2)"""
    noise_eps: float = 0.2
    """std of the Gaussian exploration noise (and of the model rollouts' action noise), in units of max_u"""
    random_eps: float = 0.3
    """probability of a uniformly random action while collecting"""
    hidden_dim: int = 256
    """units per hidden layer of actor and critic (3 layers, ReLU)"""
    dyn_layers: int = 4
    """hidden layers of the dynamics model (256 units each)"""
    ensemble: int = 1
    """dynamics models; each update trains one at random, predictions average them (official code: 3)"""
    dyn_loss: Literal["mse", "l1"] = "mse"
    """dynamics loss on the normalised state change: Eq. 4's squared error, or the code's absolute error"""
    lr_model: float = 1e-3
    """Adam learning rate of the dynamics model"""
    dyn_updates: int = 2
    """model gradient steps on each training batch"""
    dyn_warmup: int = 100
    """model gradient steps (batch 512) after the random episodes"""
    clip_obs: float = 200.0
    """observations and goals are clipped to +-clip_obs before normalising"""
    clip_range: float = 5.0
    """normalised inputs are clipped to +-clip_range"""
    norm_eps: float = 1e-4
    """lower bound of the normaliser's std (the MHER code's value)"""
    n_test_rollouts: int = 10
    """deterministic evaluation episodes per epoch (paper: 100; they dominate the wall time on Fetch)"""
    save_model: bool = False
    """write actor, normalisers and args to runs/<run>/mher.pt after each evaluation and at the end"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint for --n-test-rollouts episodes instead of training"""
    capture_video: bool = False
    """with --eval-checkpoint: save the first evaluation episode as a GIF next to the checkpoint"""
    torch_threads: int = 1
    """PyTorch CPU threads; 1 is fastest for these batch-64 updates on a 2-core machine; 0 keeps PyTorch's default"""
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


def mlp(in_dim, out_dim, hidden_dim, n_layers=3):
    layers = []
    for i in range(n_layers):
        layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden_dim, out_dim))


class Actor(nn.Module):
    """pi(s, g) = max_u tanh(MLP([o_norm, g_norm]))."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dim, max_u):
        super().__init__()
        self.net, self.max_u = mlp(obs_dim + goal_dim, act_dim, hidden_dim), max_u

    def forward(self, x):
        return self.max_u * torch.tanh(self.net(x))


class Critic(nn.Module):
    """Q(s, a, g) = MLP([o_norm, g_norm, a / max_u])."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dim, max_u):
        super().__init__()
        self.net, self.max_u = mlp(obs_dim + goal_dim + act_dim, 1, hidden_dim), max_u

    def forward(self, x, a):
        return self.net(torch.cat([x, a / self.max_u], -1)).squeeze(-1)


class Dynamics(nn.Module):
    """Eq. 4: s' = s + m(s, a), with m an MLP predicting the change in normalised state space (the code's form):
    s' = s + std_o * m(norm(s), norm(a)). Its own normalisers are running and unclipped. An ensemble averages the
    members' predictions; each update trains one member chosen at random."""

    def __init__(self, obs_dim, act_dim, n_layers, ensemble, loss, device):
        super().__init__()
        self.members = nn.ModuleList(mlp(obs_dim + act_dim, obs_dim, 256, n_layers) for _ in range(ensemble))
        self.o_norm = Normalizer(obs_dim, 1e-4, np.inf, np.inf)
        self.u_norm = Normalizer(act_dim, 1e-4, np.inf, np.inf)
        self.loss, self.device = loss, device

    def predict(self, s, a):
        x = torch.as_tensor(np.concatenate([self.o_norm(s), self.u_norm(a)], -1), device=self.device)
        with torch.no_grad():
            delta = torch.stack([m(x) for m in self.members]).mean(0).cpu().numpy()
        return s + delta * self.o_norm.std

    def update(self, s, a, s2, opt, rng):
        """One gradient step of one member on real transitions (s, a, s'); returns the loss."""
        x = torch.as_tensor(np.concatenate([self.o_norm(s), self.u_norm(a)], -1), device=self.device)
        target = torch.as_tensor(self.o_norm(s2) - self.o_norm(s), device=self.device)
        err = self.members[rng.integers(len(self.members))](x) - target
        loss = err.pow(2).mean() if self.loss == "mse" else err.abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()


class EpisodeBuffer:
    """Whole episodes as arrays obs[E, T+1], ag[E, T+1], g[E, T], actions[E, T]; sample() does HER's relabeling.

    Episodes that end early (tasks that terminate on success) keep their length in ep_len; steps past it are unused.
    """

    def __init__(self, capacity, T, obs_dim, goal_dim, act_dim, rng):
        self.E, self.T, self.rng = max(capacity // T, 1), T, rng
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

    def sample(self, batch_size, future_p, episodes=None):
        """Real transitions (s_t, a_t, s_{t+1}, ag_{t+1}, g); g is a HER future goal with probability future_p."""
        e = self.rng.integers(0, self.size, batch_size) if episodes is None else self.rng.choice(episodes, batch_size)
        T_e = self.ep_len[e]
        t = (self.rng.random(batch_size) * T_e).astype(np.int64)
        t_goal = t + 1 + (self.rng.random(batch_size) * (T_e - t)).astype(np.int64)  # future: t+1 .. T_e
        her = self.rng.random(batch_size) < future_p
        g = np.where(her[:, None], self.ag[e, t_goal], self.g[e, t])
        return self.obs[e, t], self.actions[e, t], self.obs[e, t + 1], self.ag[e, t + 1], g


def goal_indices(obs, ag):
    """phi as indices: the observation coordinates equal to each achieved-goal coordinate over the given steps."""
    idx = [next((j for j in range(obs.shape[-1]) if np.array_equal(obs[..., j], ag[..., i])), None)
           for i in range(ag.shape[-1])]
    return None if None in idx else np.array(idx)


def mbr_relabel(o2, g, actor_target, dynamics, o_norm, g_norm, goal_idx, args, rng, max_u, device):
    """Model-based relabeling (Alg. 1 lines 12-21). Returns the new goals and the mask of relabelled samples;
    s_t, a_t and s_{t+1} are never touched."""
    states, s = [o2], o2
    for _ in range(args.n_steps):  # batched rollout from the real s_{t+1} under the ORIGINAL goal g
        with torch.no_grad():
            a = actor_target(torch.as_tensor(np.concatenate([o_norm(s), g_norm(g)], -1), device=device)).cpu().numpy()
        a = np.clip(a + args.noise_eps * max_u * rng.standard_normal(a.shape), -max_u, max_u)  # target actor + noise
        s = dynamics.predict(s, a)
        states.append(s)
    k = rng.integers(0, args.n_steps + 1, len(o2))  # n + 1 candidates; k = 0 is the real phi(s_{t+1})
    g_model = np.stack(states, 1)[np.arange(len(o2)), k][:, goal_idx]
    mask = rng.random(len(o2)) < args.mbr_ratio  # 20 % keep the desired goal
    return np.where(mask[:, None], g_model, g).astype(np.float32), mask


def td_target(r, d, q_next, gamma):
    """y = r + gamma (1 - d) Q'(s', pi'(s')), clipped to [-1/(1-gamma), 0]: the range of returns of -1/0 rewards."""
    return (r + gamma * (1 - d) * q_next).clamp(-1 / (1 - gamma), 0)


def sl_loss_fn(actor, x_sl, a, mask):
    """Eq. 5, the code's form: mean over the whole batch of mask * mean over action dims of (a - pi(s, g'))^2."""
    return (mask * (a - actor(x_sl)).pow(2).mean(-1)).mean()


def mher_update(batch, sl_batch, actor, critic, actor_target, critic_target, actor_opt, critic_opt, args, gamma,
                alpha):
    """One gradient step of critic and actor (Eq. 7 and the joint loss of Eq. 6); returns the losses."""
    x, a, r, x2, d = batch
    with torch.no_grad():
        y = td_target(r, d, critic_target(x2, actor_target(x2)), gamma)
    q = critic(x, a)
    critic_loss = (q - y).pow(2).mean()  # Eq. 7: mean squared error to the clipped target
    critic_opt.zero_grad()
    critic_loss.backward()
    critic_opt.step()

    pi = actor(x)
    critic.requires_grad_(False)  # the actor loss only needs dQ/da, not the critic's weight gradients
    x_sl, mask = sl_batch
    sl_loss = sl_loss_fn(actor, x_sl, a, mask) if alpha > 0 else torch.zeros(())
    actor_loss = -critic(x, pi).mean() + args.action_l2 * (pi / actor.max_u).pow(2).mean() + alpha * sl_loss
    critic.requires_grad_(True)
    actor_opt.zero_grad()
    actor_loss.backward()
    actor_opt.step()
    return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "q_values": q.mean().item(),
            "sl_loss": sl_loss.item()}


def gcsl_update(x, a, actor, actor_opt):
    """GCSL (App. D.2): regress the executed action on future-relabelled goals; no critic."""
    loss = (a - actor(x)).pow(2).mean()  # App. D.2: ||a_t - pi(s_t, g')||^2, mean over dims and batch
    actor_opt.zero_grad()
    loss.backward()
    actor_opt.step()
    return {"sl_loss": loss.item()}


def rollout(vec_env, actor, o_norm, g_norm, T, device, explore, args, rng, max_u, warmup=False):
    """One episode in each env (reset together, stepped in lockstep); returns the episode arrays and stats."""
    n = vec_env.num_envs
    ob, _ = vec_env.reset()
    obs = np.zeros((n, T + 1, ob["observation"].shape[-1]), np.float32)
    ag = np.zeros((n, T + 1, ob["achieved_goal"].shape[-1]), np.float32)
    g = np.zeros((n, T, ob["desired_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T, vec_env.single_action_space.shape[0]), np.float32)
    ep_len, success, ret = np.full(n, T), np.zeros(n), np.zeros(n)
    running = np.ones(n, bool)
    obs[:, 0], ag[:, 0] = ob["observation"], ob["achieved_goal"]
    for t in range(T):
        g[:, t] = ob["desired_goal"]
        if warmup:  # the random warm-up episodes
            a = rng.uniform(-max_u, max_u, actions[:, t].shape).astype(np.float32)
        else:
            x = np.concatenate([o_norm(ob["observation"]), g_norm(ob["desired_goal"])], -1)
            with torch.no_grad():
                a = actor(torch.as_tensor(x, device=device)).cpu().numpy()
        if explore and not warmup:  # Gaussian noise, then with probability random_eps a uniformly random action
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
    return obs, ag, g, actions, ep_len, success, ret


def evaluate(vec_env, actor, o_norm, g_norm, T, device, n_episodes, args, rng, max_u):
    """Deterministic policy; success = is_success at each episode's final step. Returns (success rate, return)."""
    successes, returns = [], []
    while len(successes) < n_episodes:
        *_, success, ret = rollout(vec_env, actor, o_norm, g_norm, T, device, False, args, rng, max_u)
        successes += list(success)
        returns += list(ret)
    return float(np.mean(successes[:n_episodes])), float(np.mean(returns[:n_episodes]))


def make_env(args, **kwargs):
    return envs.make(args.env, max_episode_steps=args.episode_length, **kwargs)


def make_vec_env(args, n):
    """n copies of the goal env. rollout() resets them all at each cycle's start; an env whose episode ends early
    is auto-reset by the next step, and rollout() stores nothing past that episode's end."""
    return gym.vector.SyncVectorEnv([lambda: make_env(args) for _ in range(n)])


def check_env(env, args):
    """One-line errors for envs and budgets this script cannot handle."""
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        raise envs.EnvError(f"{args.env} has {space} actions; MHER needs a continuous Box action space")
    if not (np.all(space.high == space.high[0]) and np.all(space.low == -space.high)):
        raise envs.EnvError(f"{args.env}: MHER here needs a symmetric action box [-max_u, max_u]^n, got {space}")
    ob_space = env.observation_space
    if ob_space["achieved_goal"].shape != ob_space["desired_goal"].shape:
        raise envs.EnvError(f"{args.env}: achieved and desired goals differ in shape, so they cannot be relabelled")
    for name in ("total_timesteps", "episode_length", "num_envs", "n_cycles", "n_batches", "batch_size",
                 "buffer_size", "n_steps", "ensemble", "n_test_rollouts"):
        if getattr(args, name) < (0 if name in ("n_batches", "n_steps") else 1):
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not (0 <= args.random_eps <= 1 and 0 <= args.polyak <= 1 and 0 <= args.mbr_ratio <= 1) or args.alpha < 0:
        raise envs.EnvError("--random-eps, --polyak and --mbr-ratio must lie in [0, 1], and --alpha must be >= 0")


def save_checkpoint(path, actor, o_norm, g_norm, args):
    torch.save({"actor": actor.state_dict(), "o_norm": o_norm.state_dict(), "g_norm": g_norm.state_dict(),
                "args": asdict(args)}, path)


def load_and_evaluate(args):
    """Evaluate a saved actor: success rate over --n-test-rollouts episodes, optionally a GIF of the first one."""
    if not os.path.isfile(args.eval_checkpoint):
        raise envs.EnvError(f"no checkpoint at {args.eval_checkpoint}")
    if args.capture_video and "DISPLAY" not in os.environ:
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering; must be set before MuJoCo loads
    ckpt = torch.load(args.eval_checkpoint, map_location="cpu", weights_only=False)
    saved = Args(**ckpt["args"])
    env = make_env(saved)
    dims = [env.observation_space[k].shape[0] for k in ("observation", "desired_goal")]
    max_u = float(env.action_space.high[0])
    actor = Actor(*dims, env.action_space.shape[0], saved.hidden_dim, max_u)
    actor.load_state_dict(ckpt["actor"])
    o_norm = Normalizer(dims[0], saved.norm_eps, saved.clip_obs, saved.clip_range)
    g_norm = Normalizer(dims[1], saved.norm_eps, saved.clip_obs, saved.clip_range)
    o_norm.load_state_dict(ckpt["o_norm"])
    g_norm.load_state_dict(ckpt["g_norm"])
    vec_env = make_vec_env(saved, saved.num_envs)
    vec_env.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    sr, ret = evaluate(vec_env, actor, o_norm, g_norm, envs.horizon(env), "cpu", args.n_test_rollouts, saved, rng,
                       max_u)
    print(f"{saved.env}: success rate {sr:.3f}, mean return {ret:.2f} over {args.n_test_rollouts} episodes")
    if args.capture_video:
        record_gif(saved, actor, o_norm, g_norm, args.eval_checkpoint.rsplit(".", 1)[0] + ".gif", args.seed)
    vec_env.close()
    return sr


def record_gif(args, actor, o_norm, g_norm, path, seed):
    import imageio  # installed with gymnasium-robotics

    try:
        env = make_env(args, render_mode="rgb_array")
        ob, _ = env.reset(seed=seed)
        frames = [env.render()]
    except Exception as e:  # an env without rgb_array rendering, or no OpenGL on this machine
        print(f"no video: {args.env} cannot render here ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
        return
    done = False
    while not done:
        x = np.concatenate([o_norm(ob["observation"]), g_norm(ob["desired_goal"])])
        with torch.no_grad():
            ob, _, terminated, truncated, _ = env.step(actor(torch.as_tensor(x)).numpy())
        frames.append(env.render())
        done = terminated or truncated
    imageio.mimsave(path, frames, duration=40)
    print(f"video: {path}")


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
    check_env(env, args)
    T = envs.horizon(env)
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    act_dim, max_u = env.action_space.shape[0], float(env.action_space.high[0])
    gamma = args.gamma if args.gamma is not None else 1 - 1 / T
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=args.seed)
    use_model = args.algo in ("mher", "ddpg_mbr", "ddpg_sl")
    alpha = args.alpha if args.algo in ("mher", "ddpg_sl") else 0.0
    future_p = {"her": 1 - 1 / (1 + args.replay_k), "gcsl": 1.0}.get(args.algo, 0.0)  # MHER uses no future goals

    # networks, optimisers, normalisers, buffer, dynamics model
    actor = Actor(obs_dim, goal_dim, act_dim, args.hidden_dim, max_u).to(device)
    critic = Critic(obs_dim, goal_dim, act_dim, args.hidden_dim, max_u).to(device)
    actor_target = Actor(obs_dim, goal_dim, act_dim, args.hidden_dim, max_u).to(device)
    critic_target = Critic(obs_dim, goal_dim, act_dim, args.hidden_dim, max_u).to(device)
    actor_target.load_state_dict(actor.state_dict())
    critic_target.load_state_dict(critic.state_dict())
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.lr_actor)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr_critic)
    dynamics = Dynamics(obs_dim, act_dim, args.dyn_layers, args.ensemble, args.dyn_loss, device).to(device)
    model_opt = torch.optim.Adam(dynamics.parameters(), lr=args.lr_model)
    o_norm = Normalizer(obs_dim, args.norm_eps, args.clip_obs, args.clip_range)
    g_norm = Normalizer(goal_dim, args.norm_eps, args.clip_obs, args.clip_range)
    buffer = EpisodeBuffer(args.buffer_size, T, obs_dim, goal_dim, act_dim, rng)
    her_p = 1 - 1 / (1 + args.replay_k)

    run_name = f"{args.env.replace(':', '_')}__mher_{args.algo}__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    ckpt_path = f"runs/{run_name}/mher.pt"

    def to_tensor(*arrays):
        return [torch.as_tensor(a, device=device) for a in arrays]

    def inputs(o, g):
        return np.concatenate([o_norm(o), g_norm(g)], -1)

    global_step, grad_steps, cycle, episodes, start_time, sr = 0, 0, 0, 0, time.time(), 0.0
    goal_idx, model_loss = None, float("nan")
    try:
        while global_step < args.total_timesteps:
            # collect one episode per env (uniformly random during warm-up), store it, update the normalisers
            warmup = episodes < args.random_episodes
            obs, ag, g, actions, ep_len, success, ret = rollout(vec_env, actor, o_norm, g_norm, T, device, True, args,
                                                                rng, max_u, warmup)
            new = buffer.store(obs, ag, g, actions, ep_len)
            global_step += int(ep_len.sum())
            episodes += len(ep_len)
            o_s, _, _, _, g_s = buffer.sample(int(ep_len.sum()), her_p, episodes=new)  # goal stats see g'
            o_norm.update(o_s)
            g_norm.update(g_s)
            writer.add_scalar("charts/success_rate", success.mean(), global_step)
            writer.add_scalar("charts/episodic_return", ret.mean(), global_step)
            if use_model and goal_idx is None and episodes >= args.random_episodes:  # warm the model up
                goal_idx = goal_indices(buffer.obs[:buffer.size], buffer.ag[:buffer.size])
                if goal_idx is None:
                    raise envs.EnvError(f"{args.env}: model-based relabeling needs the achieved goal to be "
                                        "coordinates of the observation (phi), and it is not")
                for _ in range(args.dyn_warmup):
                    o, a, o2, _, _ = buffer.sample(512, 0.0)
                    dynamics.o_norm.update(np.concatenate([o, o2]))
                    dynamics.u_norm.update(a)
                    model_loss = dynamics.update(o, a, o2, model_opt, rng)
            if warmup:
                continue

            # a burst of updates on relabelled batches, then one Polyak update of both targets
            for _ in range(args.n_batches):
                grad_steps += 1  # of the actor and critic (GCSL: the actor); model steps are not counted
                o, a, o2, ag2, g_b = buffer.sample(args.batch_size, future_p)
                if args.algo == "gcsl":
                    losses = gcsl_update(*to_tensor(inputs(o, g_b), a), actor, actor_opt)
                    continue
                mask = np.zeros(len(o), np.float32)
                g_sl = g_b
                if use_model:
                    dynamics.o_norm.update(np.concatenate([o, o2]))  # model statistics first, as the code does
                    dynamics.u_norm.update(a)
                    for _ in range(args.dyn_updates):
                        model_loss = dynamics.update(o, a, o2, model_opt, rng)
                    g_sl, mask = mbr_relabel(o2, g_b, actor_target, dynamics, o_norm, g_norm, goal_idx, args, rng,
                                             max_u, device)
                    if mask.any():  # Fig. 4's implicit curriculum: how far relabelled goals are from the real one
                        dist = np.linalg.norm(g_sl[mask] - g_b[mask], axis=-1).mean()
                        writer.add_scalar("stats/relabel_distance", dist, global_step)
                    if args.algo != "ddpg_sl":  # ddpg_sl: critic on the desired goals, SL on the MBR goals
                        g_b = g_sl
                # rewards and terminations recomputed for the (relabelled) goals: only g changed, s, a, s' are real
                r = env.unwrapped.compute_reward(ag2, g_b, None).astype(np.float32)
                d = np.broadcast_to(env.unwrapped.compute_terminated(ag2, g_b, None), r.shape).astype(np.float32)
                x, x2 = inputs(o, g_b), inputs(o2, g_b)
                x_sl, a_t, mask_t = to_tensor(inputs(o, g_sl), a, mask.astype(np.float32))
                losses = mher_update(to_tensor(x, a_t, r, x2, d), (x_sl, mask_t), actor, critic, actor_target,
                                     critic_target, actor_opt, critic_opt, args, gamma, alpha)
            with torch.no_grad():
                for net, target in ((actor, actor_target), (critic, critic_target)):
                    for p, p_t in zip(net.parameters(), target.parameters()):
                        p_t.lerp_(p, 1 - args.polyak)  # p_t = polyak p_t + (1 - polyak) p
            cycle += 1
            if cycle % args.n_cycles and global_step < args.total_timesteps:
                continue

            # end of an epoch (n_cycles cycles) or of training: log, evaluate the deterministic policy, checkpoint
            epoch = -(-cycle // args.n_cycles)
            if args.n_batches > 0:
                for name, value in losses.items():
                    writer.add_scalar(f"losses/{name}", value, global_step)
            if use_model:
                writer.add_scalar("losses/model", model_loss, global_step)
            sr, eval_ret = evaluate(vec_env, actor, o_norm, g_norm, T, device, args.n_test_rollouts, args, rng, max_u)
            elapsed = time.time() - start_time
            sps = int(global_step / elapsed)
            writer.add_scalar("eval/success_rate", sr, global_step)
            writer.add_scalar("eval/episodic_return", eval_ret, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("charts/gradient_steps", grad_steps, global_step)
            writer.add_scalar("charts/episodes", episodes, global_step)
            writer.add_scalar("charts/epoch", epoch, global_step)
            left = elapsed / global_step * max(args.total_timesteps - global_step, 0)
            print(f"epoch {epoch:>3} | step {global_step:>8}/{args.total_timesteps} | episodes {episodes:>5} | "
                  f"success {sr:.2f} | return {eval_ret:7.2f} | SPS {sps:>5} | {elapsed:5.0f}s elapsed, "
                  f"~{left:.0f}s left", flush=True)
            if args.save_model:
                save_checkpoint(ckpt_path, actor, o_norm, g_norm, args)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}")
    finally:
        vec_env.close()
        env.close()
        writer.close()
    if args.save_model:
        save_checkpoint(ckpt_path, actor, o_norm, g_norm, args)
        print(f"checkpoint: {ckpt_path}\nevaluate it: python mher.py --eval-checkpoint {ckpt_path}")
    return sr


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminated run saves like Ctrl-C does
    try:
        main(tyro.cli(Args))
    except envs.EnvError as e:
        sys.exit(f"error: {e}")
