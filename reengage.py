# SPDX-License-Identifier: MIT -- docs: docs/reengage.md
"""ReenGAGE (Levine & Feizi, AAAI 2023): her_ddpg.py plus a critic term that matches the target's goal-gradient.
The Bellman equation holds for grad_g Q too (Eq. 7), as the expectation over s' does not depend on g, so one
transition carries d numbers of supervision about nearby goals. --alpha 0 is her_ddpg.py, weight for weight.

Equations implemented (each marked in the code):
  relabel (future):   g' = ag_{t+1+floor(U (T - t))} with probability 1 - 1/(1 + replay_k), else the episode's g
  reward:             r = compute_reward(ag_{t+1}, g')       (one vectorised call for the whole batch)
  target:             y = clip(r + gamma (1 - d) Q'(s', pi'(s', g'), g'), r_fail/(1 - gamma), r_success/(1 - gamma))
                      d = compute_terminated(ag_{t+1}, g'); time-limit truncation always bootstraps
  critic loss:        mean (Q(s, a, g') - y)^2 + alpha mean_{batch, goal dims} 1[r = r_fail] (G_Q - G_y)^2   (Eq. 9)
                      G_y = dy/dg' through Q''s goal input and pi'(s', g'); G_Q = dQ/dg' by double backpropagation
  actor loss:         -mean Q(s, pi(s, g'), g') + action_l2 mean (pi / max_u)^2
  targets:            theta' <- polyak theta' + (1 - polyak) theta, once per cycle
Workers (torchrun): each collects into its own buffer and samples its own batches; gradients are averaged every
step and normaliser sums added up across workers, as baselines' MpiAdam and MPI normaliser do.
The paper's recipe for HandReach (its fork of baselines, alevine0/ReenGAGE baselines/gradher/): this one. Its
ContinuousSeek runs used SB3 DDPG: reengage_seek.py; SAC: reengage_sac.py. Deviations: none in the term.

Usage:
  python reengage.py [--alpha 0]                               # the demo: FetchReach, solved in 6k env steps
  python reengage.py --env HandReach --num-envs 38 --batch-size 4864 --eval-interval 95000   # Fig. 3: 19 workers x 2
  python reengage.py --eval-checkpoint runs/<run>/reengage.pt --n-test-rollouts 100 [--capture-video]
"""

import os
import random
import signal
import sys
import time
import warnings
from collections import namedtuple
from dataclasses import asdict, dataclass, field
from typing import List, Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch._inductor  # noqa: F401 -- Adam imports it; imported after init_process_group, gloo outlives destroy
import torch.distributed as dist
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

import envs

ALGO = "reengage"


@dataclass
class Args:
    env: str = "FetchReach"  # goal env: a short name (FetchReach, ContinuousSeek:d=10, ...) or a Gymnasium id
    alpha: float = 2e-5  # goal-gradient weight, Eq. (9) (2e-5: the paper's best on HandReach); 0: DDPG + HER
    seed: int = 1  # seed of random, numpy, torch and the envs
    total_timesteps: Optional[int] = None  # env steps, all workers (unset: 5k; FetchReach 6k; 1M on blocks)
    num_envs: Optional[int] = None  # parallel envs per worker, an episode each per cycle (unset: 2; 16 on blocks)
    async_envs: bool = False  # step the envs in subprocesses (gymnasium's AsyncVectorEnv) instead of in this process
    env_threads: int = 1  # threads stepping MuJoCo envs (Fetch, Hand) on several cores, same results
    eval_interval: Optional[int] = None  # env steps between evals (unset: 1k; 40k on blocks)
    n_test_rollouts: Optional[int] = None  # deterministic evaluation episodes (unset: 10; 32 on blocks)
    n_batches: int = 40  # gradient steps per cycle
    batch_size: Optional[int] = None  # transitions per gradient step, per worker (unset: 256; 512 on blocks)
    buffer_size: int = 1_000_000  # replay capacity in transitions, per worker
    replay_strategy: Literal["future", "final", "episode", "none"] = "future"
    """where relabelled goals come from: later in the episode, its last step, anywhere in it, or no relabeling"""
    replay_k: int = 4  # relabelled : original goals ratio; the relabel probability is 1 - 1/(1 + replay_k) = 0.8
    gamma: Optional[float] = None  # discount; unset: 1 - 1/T (0.98 for T = 50)
    polyak: float = 0.95  # target smoothing: target <- polyak * target + (1 - polyak) * online, once per cycle
    lr_actor: float = 1e-3  # Adam learning rate of the actor
    lr_critic: float = 1e-3  # Adam learning rate of the critic
    action_l2: float = 1.0  # weight of the actor's action penalty mean((pi / max_u)^2)
    noise_eps: float = 0.2  # std of the Gaussian exploration noise, in units of max_u
    random_eps: float = 0.3  # probability of a uniformly random action while collecting
    hidden_dims: List[int] = field(default_factory=lambda: [256, 256, 256])  # hidden widths of actor and critic, ReLU
    clip_obs: float = 200.0  # observations and goals are clipped to +-clip_obs before normalising
    clip_range: float = 5.0  # normalised inputs are clipped to +-clip_range
    norm_eps: float = 0.01  # lower bound of the normaliser's std
    save_model: bool = False  # save actor, normalisers and args as a .pt file in the run folder at each evaluation
    eval_checkpoint: Optional[str] = None  # evaluate this checkpoint for --n-test-rollouts episodes instead of training
    capture_video: bool = False  # with --eval-checkpoint: save the first episode as a GIF next to the checkpoint
    torch_threads: int = 1  # PyTorch CPU threads per process (0: PyTorch's default, every core)
    torch_deterministic: bool = True  # use deterministic torch algorithms
    cuda: bool = False  # train on the GPU if one is available (with torchrun: one GPU per worker, nccl)


# Per-env defaults of unset flags. Blocks (Push, PickAndPlace, Slide): 16 episodes per cycle, baselines' 8 workers x 2.
ENV_DEFAULTS = {
    "default": dict(total_timesteps=5_000, num_envs=2, eval_interval=1_000, batch_size=256, n_test_rollouts=10),
    "FetchPush": dict(total_timesteps=1_000_000, num_envs=16, eval_interval=40_000, batch_size=512,
                      n_test_rollouts=32),
}
ENV_DEFAULTS["FetchPickAndPlace"] = ENV_DEFAULTS["FetchSlide"] = ENV_DEFAULTS["FetchPush"]
ENV_DEFAULTS["FetchReach"] = dict(ENV_DEFAULTS["default"], total_timesteps=6_000)  # 5k ended at 0.8 on 1 seed of 5


def fill_defaults(args):
    """Set every flag left unset (None) to its per-env default."""
    name = envs.parse(args.env)[0].split("-v")[0]
    for key, value in ENV_DEFAULTS.get(name, ENV_DEFAULTS["default"]).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def all_reduce_sum(x):
    """x summed over the torchrun workers (x itself without torchrun)."""
    if not dist.is_initialized():
        return x
    y = x.cuda() if dist.get_backend() == "nccl" else x  # nccl reduces GPU tensors only
    dist.all_reduce(y)
    return y.to(x.device)


class Normalizer:
    """Running mean/std normaliser (baselines'): clip +-clip_obs, standardise, clip +-clip_range; sums over workers."""

    def __init__(self, size, eps=0.01, clip_obs=200.0, clip_range=5.0):
        self.eps, self.clip_obs, self.clip_range = eps, clip_obs, clip_range
        self.sum, self.sumsq, self.count = np.zeros(size), np.zeros(size), 0
        self.mean, self.std = np.zeros(size, np.float32), np.ones(size, np.float32)

    def update(self, x):
        x = np.clip(x, -self.clip_obs, self.clip_obs).reshape(-1, self.sum.shape[0])
        stats = np.concatenate([x.sum(0), np.square(x, dtype=np.float64).sum(0), [len(x)]])
        stats, n = all_reduce_sum(torch.as_tensor(stats, dtype=torch.float64)).numpy(), self.sum.shape[0]
        self.sum, self.sumsq, self.count = self.sum + stats[:n], self.sumsq + stats[n:2 * n], self.count + int(stats[-1])
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
        else:  # "episode": anywhere in 1 .. T_e
            t_goal = 1 + (self.rng.random(batch_size) * T_e).astype(np.int64)
        g[her] = self.ag[e[her], t_goal[her]]
        ag_next = self.ag[e, t + 1]
        # rewards and terminations recomputed for the new goals, one vectorised call each
        r = self.env.compute_reward(ag_next, g, None).astype(np.float32)
        d = np.broadcast_to(self.env.compute_terminated(ag_next, g, None), r.shape).astype(np.float32)
        return Batch(self.obs[e, t], self.actions[e, t], r, self.obs[e, t + 1], g, d)


def td_target(r, d, q_next, gamma, rewards=(-1.0, 0.0)):
    """y = r + gamma (1 - d) Q'(s', pi'(s')), clipped to the range of returns [r_fail, r_success] / (1 - gamma)."""
    return (r + gamma * (1 - d) * q_next).clamp(rewards[0] / (1 - gamma), rewards[1] / (1 - gamma))


def average_gradients(*nets):
    """Mean of every gradient over the torchrun workers (baselines' MpiAdam), as one flat all-reduce."""
    if not dist.is_initialized():
        return
    grads = [p.grad for net in nets for p in net.parameters()]
    flat = all_reduce_sum(torch.cat([g.reshape(-1) for g in grads])) / dist.get_world_size()
    for g, chunk in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(chunk.view_as(g))


# ---- ReenGAGE: what differs from her_ddpg.py ----
def reengage_critic_loss(o, a, r, o2, g, d, critic, actor_target, critic_target, g_norm, gamma, alpha, rewards):
    """Eq. (4) + alpha Eq. (9) -> (loss, term, Q). o, o2 normalised; g raw: gradients w.r.t. the env's goal."""
    g2, g1 = (g.detach().requires_grad_(alpha > 0) for _ in range(2))
    with torch.set_grad_enabled(alpha > 0):  # alpha = 0: exactly her_ddpg.py's critic loss
        x2 = torch.cat([o2, g_norm.torch(g2)], -1)
        y = td_target(r, d, critic_target(x2, actor_target(x2)), gamma, rewards)
        grad_y = torch.autograd.grad(y.sum(), g2)[0] if alpha > 0 else None  # G_y: through Q''s goal AND pi'
    q = critic(torch.cat([o, g_norm.torch(g1)], -1), a)
    loss = (q - y.detach()).pow(2).mean()  # critic: mean squared error to the clipped target
    if alpha == 0:
        return loss, torch.zeros(()), q
    grad_q = torch.autograd.grad(q.sum(), g1, create_graph=True)[0]  # G_Q by double backprop, so the loss trains it
    mask = (r == rewards[0]).float().unsqueeze(-1)  # Eq. (9): only where r = r_fail (there grad_g r = 0)
    grad_match = (mask * (grad_q - grad_y) ** 2).mean()  # mean over batch AND goal dims (the authors' alpha)
    return loss + alpha * grad_match, grad_match, q


def update(batch, actor, critic, actor_target, critic_target, actor_opt, critic_opt, args, gamma, rewards, g_norm):
    """One gradient step of critic and actor on a relabelled, normalised batch; returns the logged losses."""
    o, a, r, o2, g, d = batch
    critic_loss, grad_match, q = reengage_critic_loss(o, a, r, o2, g, d, critic, actor_target, critic_target, g_norm,
                                                      gamma, args.alpha, rewards)
    x = torch.cat([o, g_norm.torch(g)], -1)
    pi = actor(x)
    critic.requires_grad_(False)  # the actor loss only needs dQ/da, not the critic's weight gradients
    actor_loss = -critic(x, pi).mean() + args.action_l2 * (pi / actor.max_u).pow(2).mean()  # DDPG + action L2
    critic.requires_grad_(True)
    # both gradients from the same critic, then both steps (baselines' her/ddpg.py: one sess.run, then the Adams)
    critic_opt.zero_grad()
    actor_opt.zero_grad()
    critic_loss.backward()
    actor_loss.backward()
    average_gradients(critic, actor)
    critic_opt.step()
    actor_opt.step()
    return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "q_values": q.mean().item(),
            "grad_match": grad_match.item(), "masked_fraction": (r == rewards[0]).float().mean().item()}
# ---- end ----


def soft_update(net, target, polyak):
    """target <- polyak * target + (1 - polyak) * net."""
    with torch.no_grad():
        for p, p_t in zip(net.parameters(), target.parameters()):
            p_t.lerp_(p, 1 - polyak)


# one episode per env: obs, ag [n, T+1, dim]; g, actions [n, T, dim]; ep_len, success (at the final step), ret [n]
Episodes = namedtuple("Episodes", "obs ag g actions ep_len success ret")


def rollout(vec_env, actor, o_norm, g_norm, T, device, args, rng, max_u, *, explore):
    """One episode in each env (reset together, stepped in lockstep); explore adds HER's exploration."""
    n = vec_env.num_envs
    ob, _ = vec_env.reset()
    obs, ag = (np.zeros((n, T + 1, ob[k].shape[-1]), np.float32) for k in ("observation", "achieved_goal"))
    g = np.zeros((n, T, ob["desired_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T, vec_env.single_action_space.shape[0]), np.float32)
    ep_len, success, ret, running = np.full(n, T), np.zeros(n), np.zeros(n), np.ones(n, bool)
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
        raise envs.EnvError(f"{args.env} has {space} actions; DDPG needs a continuous Box action space")
    if not (np.all(space.high == space.high[0]) and np.all(space.low == -space.high)):
        raise envs.EnvError(f"{args.env}: DDPG here needs a symmetric action box [-max_u, max_u]^n, got {space}")
    if env.observation_space["achieved_goal"].shape != env.observation_space["desired_goal"].shape:
        raise envs.EnvError(f"{args.env}: achieved and desired goals differ in shape, so they cannot be relabelled")
    for name in ("total_timesteps", "num_envs", "eval_interval", "n_batches", "batch_size", "buffer_size",
                 "n_test_rollouts", "env_threads"):
        if getattr(args, name) < (0 if name == "n_batches" else 1):
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.random_eps <= 1 or not 0 <= args.polyak <= 1 or args.replay_k < 0:
        raise envs.EnvError("--random-eps and --polyak must lie in [0, 1] and --replay-k must be >= 0")
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


def init_workers(args):
    """(rank, world size, device): under torchrun a process group (gloo, or nccl with --cuda), else rank 0 of 1."""
    cuda = args.cuda and torch.cuda.is_available()
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    return rank, dist.get_world_size(), torch.device(f"cuda:{local_rank}" if cuda else "cpu")


def seed_everything(args, rank):
    """Seed random, numpy, torch; each torchrun worker gets its own env and sampling seed."""
    seed = args.seed + 1000 * rank  # each worker its own episodes; make_learner's broadcast makes the networks equal
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    return seed, np.random.default_rng(seed)


def make_learner(env, args, device):
    """Actor, critic, their targets and optimisers; under torchrun every worker starts from rank 0's weights."""
    dims = (env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0],
            env.action_space.shape[0], args.hidden_dims, float(env.action_space.high[0]))
    actor, critic = Actor(*dims).to(device), Critic(*dims).to(device)
    if dist.is_initialized():
        for p in [*actor.parameters(), *critic.parameters()]:
            dist.broadcast(p.data, 0)
    actor_target, critic_target = Actor(*dims).to(device), Critic(*dims).to(device)
    actor_target.load_state_dict(actor.state_dict())
    critic_target.load_state_dict(critic.state_dict())
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.lr_actor, fused=True)  # fused: ~30% faster updates
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr_critic, fused=True)
    return actor, critic, actor_target, critic_target, actor_opt, critic_opt


def start_run(env, args, world):
    """The run's folder, its TensorBoard writer and the header line."""
    run_dir = f"runs/{args.env.replace(':', '_')}__{ALGO}__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    workers = f" ({world} workers)" if world > 1 else ""
    print(f"{ALGO} | {env.spec.id} | {args.total_timesteps:,} env steps{workers} | seed {args.seed} | run {run_dir} | "
          "tensorboard --logdir runs", flush=True)
    return run_dir, writer


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
    rank, world, device = init_workers(args)
    seed, rng = seed_everything(args, rank)

    # envs: one in this process for the spaces and the vectorised reward, num_envs for collecting
    env = make_env(args)
    rewards, T = check_env(env, args), envs.horizon(env)
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    max_u = float(env.action_space.high[0])
    gamma = args.gamma if args.gamma is not None else 1 - 1 / T
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=seed)
    actor, critic, actor_target, critic_target, actor_opt, critic_opt = make_learner(env, args, device)
    o_norm, g_norm = (Normalizer(dim, args.norm_eps, args.clip_obs, args.clip_range) for dim in (obs_dim, goal_dim))
    buffer = EpisodeBuffer(args.buffer_size, T, obs_dim, goal_dim, env.action_space.shape[0], env.unwrapped,
                           args.replay_strategy, args.replay_k, rng)
    run_dir, writer = start_run(env, args, world) if rank == 0 else (None, None)  # rank 0 logs, evaluates, saves
    ckpt_path = f"{run_dir}/{ALGO}.pt"

    global_step, grad_steps, next_eval, start_time, sr, losses = 0, 0, args.eval_interval, time.time(), 0.0, {}
    try:
        while global_step < args.total_timesteps:
            # collect one episode per env with exploration, store it, update the normalisers
            ep = rollout(vec_env, actor, o_norm, g_norm, T, device, args, rng, max_u, explore=True)
            new = buffer.store(ep.obs, ep.ag, ep.g, ep.actions, ep.ep_len)
            global_step += int(all_reduce_sum(torch.tensor(int(ep.ep_len.sum()))))  # every worker's steps
            # normaliser statistics come from relabelled samples of the new episodes (goal stats see g')
            sample = buffer.sample(int(ep.ep_len.sum()), episodes=new)
            o_norm.update(sample.obs)
            g_norm.update(sample.g)
            if writer:
                writer.add_scalar("charts/success_rate", ep.success.mean(), global_step)
                writer.add_scalar("charts/episodic_return", ep.ret.mean(), global_step)

            # a burst of updates on relabelled batches, then one Polyak update of both targets
            for _ in range(args.n_batches):
                b = buffer.sample(args.batch_size)
                x, x2 = o_norm(b.obs), o_norm(b.next_obs)  # goals stay raw: the loss differentiates w.r.t. them
                batch = [torch.as_tensor(v, device=device) for v in (x, b.actions, b.rewards, x2, b.g, b.dones)]
                losses = update(batch, actor, critic, actor_target, critic_target, actor_opt, critic_opt, args, gamma,
                                rewards, g_norm)
                grad_steps += 1
            soft_update(actor, actor_target, args.polyak)
            soft_update(critic, critic_target, args.polyak)

            # every eval_interval env steps and at the end: evaluate the deterministic policy, log, checkpoint
            if (global_step < next_eval and global_step < args.total_timesteps) or rank > 0:
                continue
            next_eval = (global_step // args.eval_interval + 1) * args.eval_interval
            sr, eval_ret = evaluate(vec_env, actor, o_norm, g_norm, T, device, args.n_test_rollouts, args, rng, max_u)
            log_evaluation(writer, global_step, args, sr, eval_ret, losses, grad_steps, buffer.size * world, o_norm,
                           g_norm, start_time)
            if args.save_model:
                save_checkpoint(ckpt_path, actor, o_norm, g_norm, args)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}")
        vec_env.close(terminate=True)  # do not wait for subprocess envs caught mid-step
    finally:
        vec_env.close()
        env.close()
        if writer:
            writer.close()
    if rank == 0:
        saved = ""
        if args.save_model:
            save_checkpoint(ckpt_path, actor, o_norm, g_norm, args)
            saved = f" | checkpoint {ckpt_path} (evaluate: python {ALGO}.py --eval-checkpoint {ckpt_path})"
        print(f"{ALGO} done | success {sr:.2f} | {global_step:,} env steps | {grad_steps:,} gradient steps | "
              f"{time.time() - start_time:.0f} s{saved}", flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    return sr


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminated run saves like Ctrl-C does
    try:
        main(tyro.cli(Args))
    except envs.EnvError as e:
        sys.exit(f"error: {e}")
