"""DDPG + Hindsight Experience Replay (Andrychowicz et al., NeurIPS 2017), with the OpenAI-baselines recipe
(Plappert et al. 2018) that reproduces the published curves. The reference every other file here mirrors.

Idea: with a sparse reward r = -1[goal not reached], almost every episode fails and teaches nothing. But each failed
episode did reach *some* goals, the states it visited. Replaying a transition with its goal swapped for a goal
achieved later in the same episode turns failures into successes for that goal, so an off-policy goal-conditioned
critic Q(s, a, g) learns from every episode.

Equations implemented (each marked in the code):
  relabel (future):   g' = ag_{t+1+floor(U (T - t))} with probability 1 - 1/(1 + replay_k), else the episode's g
  reward:             r = compute_reward(ag_{t+1}, g')       (one vectorised call for the whole batch)
  target:             y = clip(r + gamma (1 - d) Q'(s', pi'(s', g'), g'), -1/(1 - gamma), 0)
                      d = compute_terminated(ag_{t+1}, g'); time-limit truncation always bootstraps
  critic loss:        mean (Q(s, a, g') - y)^2
  actor loss:         -mean Q(s, pi(s, g'), g') + action_l2 mean (pi / max_u)^2
  targets:            theta' <- polyak theta' + (1 - polyak) theta, once per cycle
Deviations from the paper: none in the algorithm. Fetch v4 (Gymnasium-Robotics) replaces the paper's v1 envs;
parallel envs are local (a vector env), not MPI workers, so the batch is not multiplied by the worker count.

Usage:
  python her_ddpg.py --env FetchReach                          # the demo: solved in 5k env steps
  python her_ddpg.py --env FetchPush --total-timesteps 300000 --n-cycles 50
  python her_ddpg.py --env ContinuousSeek:d=5 --save-model
  python her_ddpg.py --eval-checkpoint runs/<run>/her_ddpg.pt --n-test-rollouts 100 [--capture-video]
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
    """goal env: a short name (FetchReach, FetchPush, ContinuousSeek:d=10, Point2DFourRoom, ...) or a Gymnasium id"""
    seed: int = 1
    """seed of random, numpy, torch and the envs"""
    total_timesteps: int = 5_000
    """training env steps, all envs counted"""
    num_envs: int = 2
    """parallel envs; one cycle collects one episode from each"""
    async_envs: bool = False
    """step envs in subprocesses; pays only when an env step costs well over a pipe round trip (not FetchReach on
    a 2-core VM: 0.4 ms per round trip there, and async ran no faster than sync)"""
    n_cycles: int = 10
    """cycles per epoch; an evaluation follows each epoch (baselines: 50, FetchReach 10)"""
    n_batches: int = 40
    """gradient steps per cycle"""
    batch_size: int = 256
    """transitions per gradient step"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions"""
    replay_strategy: Literal["future", "final", "episode", "none"] = "future"
    """where relabelled goals come from: later in the episode, its last step, anywhere in it, or no relabeling"""
    replay_k: int = 4
    """relabelled : original goals ratio; the relabel probability is 1 - 1/(1 + replay_k) = 0.8"""
    gamma: Optional[float] = None
    """discount; default 1 - 1/T (0.98 for T = 50)"""
    polyak: float = 0.95
    """target <- polyak * target + (1 - polyak) * main, once per cycle"""
    lr_actor: float = 1e-3
    """Adam learning rate of the actor"""
    lr_critic: float = 1e-3
    """Adam learning rate of the critic"""
    action_l2: float = 1.0
    """weight of the actor's action penalty mean((pi / max_u)^2)"""
    noise_eps: float = 0.2
    """std of the Gaussian exploration noise, in units of max_u"""
    random_eps: float = 0.3
    """probability of a uniformly random action while collecting"""
    hidden_dim: int = 256
    """units per hidden layer (3 layers, ReLU)"""
    clip_obs: float = 200.0
    """observations and goals are clipped to +-clip_obs before normalising"""
    clip_range: float = 5.0
    """normalised inputs are clipped to +-clip_range"""
    norm_eps: float = 0.01
    """lower bound of the normaliser's std"""
    n_test_rollouts: int = 10
    """deterministic evaluation episodes per epoch"""
    save_model: bool = False
    """write actor, normalisers and args to runs/<run>/her_ddpg.pt after each evaluation and at the end"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint for --n-test-rollouts episodes instead of training"""
    capture_video: bool = False
    """with --eval-checkpoint: save the first evaluation episode as a GIF next to the checkpoint"""
    torch_threads: int = 0
    """PyTorch CPU threads; 0 keeps PyTorch's default, fastest on an idle machine; use 1 when other runs share
    the cores (FetchReach beside two other runs on 2 cores: 5x faster with 1 thread)"""
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


class EpisodeBuffer:
    """Whole episodes as arrays obs[E, T+1], ag[E, T+1], g[E, T], actions[E, T]; sample() does the relabeling.

    Episodes that end early (tasks that terminate on success) keep their length in ep_len; steps past it are unused.
    """

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
        """Add a batch of episodes; returns their indices."""
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
        else:  # "episode": anywhere in 1 .. T_e
            t_goal = 1 + (self.rng.random(batch_size) * T_e).astype(np.int64)
        g[her] = self.ag[e[her], t_goal[her]]
        ag_next = self.ag[e, t + 1]
        # rewards and terminations recomputed for the new goals, one vectorised call each
        r = self.env.compute_reward(ag_next, g, None).astype(np.float32)
        d = np.broadcast_to(self.env.compute_terminated(ag_next, g, None), r.shape).astype(np.float32)
        return self.obs[e, t], self.actions[e, t], r, self.obs[e, t + 1], g, d


def td_target(r, d, q_next, gamma):
    """y = r + gamma (1 - d) Q'(s', pi'(s')), clipped to [-1/(1-gamma), 0]: the range of returns of -1/0 rewards."""
    return (r + gamma * (1 - d) * q_next).clamp(-1 / (1 - gamma), 0)


def ddpg_update(batch, actor, critic, actor_target, critic_target, actor_opt, critic_opt, args, gamma):
    """One gradient step of critic and actor on a relabelled, normalised batch; returns the losses."""
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
    actor_loss = -critic(x, pi).mean() + args.action_l2 * (pi / actor.max_u).pow(2).mean()  # DDPG + action L2
    critic.requires_grad_(True)
    actor_opt.zero_grad()
    actor_loss.backward()
    actor_opt.step()
    return critic_loss.item(), actor_loss.item(), q.mean().item()


def rollout(vec_env, actor, o_norm, g_norm, T, device, explore, args, rng, max_u):
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
        x = np.concatenate([o_norm(ob["observation"]), g_norm(ob["desired_goal"])], -1)
        with torch.no_grad():
            a = actor(torch.as_tensor(x, device=device)).cpu().numpy()
        if explore:  # Gaussian noise, then with probability random_eps a uniformly random action
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


def make_vec_env(args, n):
    """n copies of the goal env. rollout() resets them all at each cycle's start; an env whose episode ends early
    is auto-reset by the next step, and rollout() stores nothing past that episode's end."""
    fns = [lambda: envs.make(args.env) for _ in range(n)]
    return gym.vector.AsyncVectorEnv(fns) if args.async_envs else gym.vector.SyncVectorEnv(fns)


def check_env(env, args):
    """One-line errors for envs and budgets this script cannot handle."""
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        raise envs.EnvError(f"{args.env} has {space} actions; DDPG needs a continuous Box action space")
    if not (np.all(space.high == space.high[0]) and np.all(space.low == -space.high)):
        raise envs.EnvError(f"{args.env}: DDPG here needs a symmetric action box [-max_u, max_u]^n, got {space}")
    ob_space = env.observation_space
    if ob_space["achieved_goal"].shape != ob_space["desired_goal"].shape:
        raise envs.EnvError(f"{args.env}: achieved and desired goals differ in shape, so they cannot be relabelled")
    for name in ("total_timesteps", "num_envs", "n_cycles", "n_batches", "batch_size", "buffer_size",
                 "n_test_rollouts"):
        if getattr(args, name) < (0 if name == "n_batches" else 1):
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.random_eps <= 1 or not 0 <= args.polyak <= 1 or args.replay_k < 0:
        raise envs.EnvError("--random-eps and --polyak must lie in [0, 1] and --replay-k must be >= 0")


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
    env = envs.make(saved.env)
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
        env = envs.make(args.env, render_mode="rgb_array")
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
    env = envs.make(args.env)
    check_env(env, args)
    T = envs.horizon(env)
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    act_dim, max_u = env.action_space.shape[0], float(env.action_space.high[0])
    gamma = args.gamma if args.gamma is not None else 1 - 1 / T
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=args.seed)

    # networks, optimisers, normalisers, buffer
    actor = Actor(obs_dim, goal_dim, act_dim, args.hidden_dim, max_u).to(device)
    critic = Critic(obs_dim, goal_dim, act_dim, args.hidden_dim, max_u).to(device)
    actor_target = Actor(obs_dim, goal_dim, act_dim, args.hidden_dim, max_u).to(device)
    critic_target = Critic(obs_dim, goal_dim, act_dim, args.hidden_dim, max_u).to(device)
    actor_target.load_state_dict(actor.state_dict())
    critic_target.load_state_dict(critic.state_dict())
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.lr_actor, fused=True)  # fused: ~30% faster updates
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr_critic, fused=True)
    o_norm = Normalizer(obs_dim, args.norm_eps, args.clip_obs, args.clip_range)
    g_norm = Normalizer(goal_dim, args.norm_eps, args.clip_obs, args.clip_range)
    buffer = EpisodeBuffer(args.buffer_size, T, obs_dim, goal_dim, act_dim, env.unwrapped, args.replay_strategy,
                           args.replay_k, rng)

    run_name = f"{args.env.replace(':', '_')}__her_ddpg__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    ckpt_path = f"runs/{run_name}/her_ddpg.pt"

    def to_tensor(*arrays):
        return [torch.as_tensor(a, device=device) for a in arrays]

    global_step, grad_steps, cycle, start_time, sr = 0, 0, 0, time.time(), 0.0
    try:
        while global_step < args.total_timesteps:
            # collect one episode per env with exploration, store it, update the normalisers
            obs, ag, g, actions, ep_len, success, ret = rollout(vec_env, actor, o_norm, g_norm, T, device, True, args,
                                                                rng, max_u)
            new = buffer.store(obs, ag, g, actions, ep_len)
            global_step += int(ep_len.sum())
            # normaliser statistics come from relabelled samples of the new episodes (goal stats see g')
            o_s, _, _, _, g_s, _ = buffer.sample(int(ep_len.sum()), episodes=new)
            o_norm.update(o_s)
            g_norm.update(g_s)
            writer.add_scalar("charts/success_rate", success.mean(), global_step)
            writer.add_scalar("charts/episodic_return", ret.mean(), global_step)

            # a burst of updates on relabelled batches, then one Polyak update of both targets
            for _ in range(args.n_batches):
                o, a, r, o2, g_b, d = buffer.sample(args.batch_size)
                g_n = g_norm(g_b)
                x = np.concatenate([o_norm(o), g_n], -1)
                x2 = np.concatenate([o_norm(o2), g_n], -1)
                losses = ddpg_update(to_tensor(x, a, r, x2, d), actor, critic, actor_target, critic_target,
                                     actor_opt, critic_opt, args, gamma)
                grad_steps += 1
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
                writer.add_scalar("losses/critic_loss", losses[0], global_step)
                writer.add_scalar("losses/actor_loss", losses[1], global_step)
                writer.add_scalar("losses/q_values", losses[2], global_step)
            writer.add_scalar("stats/o_mean", float(o_norm.mean.mean()), global_step)
            writer.add_scalar("stats/g_mean", float(g_norm.mean.mean()), global_step)
            sr, eval_ret = evaluate(vec_env, actor, o_norm, g_norm, T, device, args.n_test_rollouts, args, rng, max_u)
            elapsed = time.time() - start_time
            sps = int(global_step / elapsed)
            writer.add_scalar("eval/success_rate", sr, global_step)
            writer.add_scalar("eval/episodic_return", eval_ret, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("charts/gradient_steps", grad_steps, global_step)
            writer.add_scalar("charts/episodes", buffer.size, global_step)
            writer.add_scalar("charts/epoch", epoch, global_step)
            left = elapsed / global_step * max(args.total_timesteps - global_step, 0)
            print(f"epoch {epoch:>3} | step {global_step:>8}/{args.total_timesteps} | success {sr:.2f} | "
                  f"return {eval_ret:7.2f} | SPS {sps:>5} | {elapsed:5.0f}s elapsed, ~{left:.0f}s left", flush=True)
            if args.save_model:
                save_checkpoint(ckpt_path, actor, o_norm, g_norm, args)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}")
        vec_env.close(terminate=True)  # do not wait for subprocess envs caught mid-step
    finally:
        vec_env.close()
        env.close()
        writer.close()
    if args.save_model:
        save_checkpoint(ckpt_path, actor, o_norm, g_norm, args)
        print(f"checkpoint: {ckpt_path}\nevaluate it: python her_ddpg.py --eval-checkpoint {ckpt_path}")
    return sr


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminated run saves like Ctrl-C does
    try:
        main(tyro.cli(Args))
    except envs.EnvError as e:
        sys.exit(f"error: {e}")
