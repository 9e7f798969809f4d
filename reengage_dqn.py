# SPDX-License-Identifier: MIT -- docs: docs/reengage_dqn.md
"""ReenGAGE for discrete actions (Levine & Feizi, AAAI 2023, appendix "ReenGAGE for Discrete Actions"): DQN + HER
on bit flipping plus a critic term that matches the target's goal-gradient. reengage.py is the DDPG version.

Idea: the Bellman equation holds for grad_g Q too (Eq. 7), so one transition carries d numbers of supervision about
nearby goals. DQN's target max_a Q'_a(s', g) has no useful goal-gradient where the argmax switches, so the term
matches the gradient of a soft target instead (Eq. 31), a softmax-weighted mean of Q' that tends to the max as
tau -> 0. The goal enters the network as floats, and grad_g is taken there, even though goals are bits.

Equations implemented (each marked in the code):
  relabel (future):   g' = ag_{t+1+floor(U (T - t))} with probability 1 - 1/(1 + replay_k), else the episode's g
  reward:             r = compute_reward(ag_{t+1}, g'); d = compute_terminated(ag_{t+1}, g') (success ends an episode)
  soft target:        Eq. (31)  y_soft = r + gamma (1 - d) sum_a softmax(Q'(s', g') / tau)_a Q'_a(s', g')
  DQN target:         Eq. (29)  y = r + gamma (1 - d) max_a Q'_a(s', g')          (not clipped, as in the appendix)
  loss, --target grad (Eq. 32):  Huber(Q_a(s, g'), y) + alpha mean_{batch, goal dims} 1[r = r_fail] (G_Q - G_y)^2
                      G_Q = dQ_a(s, g')/dg' by double backpropagation, G_y = dy_soft/dg' (gamma applied once)
  --target both (Eq. 33): y_soft in the Huber term too; --target boltzmann: that, and actions ~ softmax(Q/tau)
  targets:            theta' <- polyak theta' + (1 - polyak) theta, once per cycle
Recipe: the HER paper's bit-flip settings (App. A: one hidden layer of 256, 16 episodes then 40 Adam steps of batch
128 per cycle, gamma 0.98, polyak 0.95, 20 % random actions) with the ReenGAGE appendix's changes: one process, no
target clip, no input normalisation, evaluation with the current (not the target) network.
Deviations from the paper: Eq. (32)/(33) print gamma grad_g SoftQTarget, which applies gamma twice, and omit the
sparse mask of Eq. (9); both are read as in Eq. (9). --alpha 0 --target grad is DQN + HER.

Usage:
  python reengage_dqn.py [--alpha 0]                          # the demo: 12 bits
  python reengage_dqn.py --env BitFlip:n=40 [--alpha 0]       # Fig. 7: the paper's settings, 2M env steps
  python reengage_dqn.py --eval-checkpoint runs/<run>/reengage_dqn.pt --n-test-rollouts 100
"""

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

ALGO = "reengage_dqn"


@dataclass
class Args:
    env: str = "BitFlip:n=12"
    """goal env with Discrete actions: BitFlip:n=<bits> (HER's bit flipping: random start and goal) or a Gymnasium id"""
    alpha: float = 0.5
    """weight of the goal-gradient term (mean over batch and goal dims, Fig. 7's "alpha/d"); 0 gives DQN + HER"""
    target: Literal["grad", "both", "boltzmann"] = "grad"
    """where the soft target enters: the gradient term only (Eq. 32), both terms (Eq. 33), or both terms with
    actions sampled from softmax(Q / tau) while collecting"""
    tau: float = 0.5
    """temperature of the soft target, Eq. (31); 0 is the hard max (DQN's target and its autodiff gradient)"""
    seed: int = 1
    """seed of random, numpy, torch and the envs"""
    total_timesteps: Optional[int] = None
    """training env steps, all envs counted (unset: 12k; 2M on BitFlip:n=40, 500k on BitFlip:n=20)"""
    num_envs: int = 16
    """parallel envs; a cycle collects one episode from each (HER: 16 episodes per cycle)"""
    eval_interval: Optional[int] = None
    """env steps between evaluations (unset: 2k; one HER epoch of 50 cycles on BitFlip:n=40 and n=20); one more
    ends the run"""
    n_test_rollouts: Optional[int] = None
    """greedy evaluation episodes (unset: 32; 50 on BitFlip:n=40 and n=20)"""
    n_batches: int = 40
    """gradient steps per cycle"""
    batch_size: int = 128
    """transitions per gradient step"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions"""
    replay_strategy: Literal["future", "final", "episode", "none"] = "future"
    """where relabelled goals come from: later in the episode, its last step, anywhere in it, or no relabeling"""
    replay_k: int = 4
    """relabelled : original goals ratio; the relabel probability is 1 - 1/(1 + replay_k) = 0.8"""
    gamma: float = 0.98
    """discount (HER's 0.98)"""
    polyak: float = 0.95
    """target smoothing: target <- polyak * target + (1 - polyak) * online, once per cycle"""
    lr: float = 1e-3
    """Adam learning rate (PyTorch's other Adam defaults, as in the appendix)"""
    random_eps: float = 0.2
    """probability of a uniformly random action while collecting, epsilon-greedy (unused with --target boltzmann)"""
    hidden_dims: List[int] = field(default_factory=lambda: [256])
    """hidden layer widths of the Q-network, ReLU (HER's bit-flip network: one layer of 256)"""
    save_model: bool = False
    """write the Q-network and args to runs/<run>/reengage_dqn.pt after each evaluation and at the end"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint for --n-test-rollouts episodes instead of training"""
    torch_threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default, every core)"""
    torch_deterministic: bool = True
    """use deterministic torch algorithms"""
    cuda: bool = False
    """train on the GPU if one is available"""


# Defaults of the flags left unset, per env. BitFlip:n=40 and n=20 are Fig. 7's runs: an HER epoch (50 cycles of 16
# episodes) between evaluations; the demo evaluates more often.
ENV_DEFAULTS = {
    "default": dict(total_timesteps=12_000, eval_interval=2_000, n_test_rollouts=32),
    "BitFlip:n=40": dict(total_timesteps=2_000_000, eval_interval=32_000, n_test_rollouts=50),
    "BitFlip:n=20": dict(total_timesteps=500_000, eval_interval=16_000, n_test_rollouts=50),
}


def fill_defaults(args):
    """Set every flag left unset (None) to its per-env default (keyed by name and bit count)."""
    name, kwargs = envs.parse(args.env)
    key = f"{name}:n={kwargs['n']}" if "n" in kwargs else name
    for k, value in ENV_DEFAULTS.get(key, ENV_DEFAULTS["default"]).items():
        if getattr(args, k) is None:
            setattr(args, k, value)
    return args


def mlp(in_dim, out_dim, hidden_dims, activation=nn.ReLU):
    layers, dims = [], [in_dim, *hidden_dims]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


class QNetwork(nn.Module):
    """Q(s, ., g) = MLP([obs, g]) -> one value per action; raw float inputs (the appendix does not normalise)."""

    def __init__(self, obs_dim, goal_dim, n_actions, hidden_dims):
        super().__init__()
        self.net = mlp(obs_dim + goal_dim, n_actions, hidden_dims)

    def forward(self, x):
        return self.net(x)


class Batch(NamedTuple):  # a relabelled sample, arrays [B, dim]
    obs: np.ndarray
    actions: np.ndarray  # [B] action indices
    rewards: np.ndarray
    next_obs: np.ndarray
    g: np.ndarray
    dones: np.ndarray


class EpisodeBuffer:
    """Whole episodes as arrays obs[E, T+1], ag[E, T+1], g[E, T], actions[E, T] (indices); sample() relabels.

    Episodes that end early (bit flipping ends on success) keep their length in ep_len; steps past it are unused.
    """

    def __init__(self, capacity, T, obs_dim, goal_dim, env, strategy, replay_k, rng):
        self.E, self.T, self.env, self.strategy, self.rng = max(capacity // T, 1), T, env, strategy, rng
        self.future_p = 1 - 1 / (1 + replay_k) if strategy != "none" else 0.0
        self.obs = np.zeros((self.E, T + 1, obs_dim), np.float32)
        self.ag = np.zeros((self.E, T + 1, goal_dim), np.float32)
        self.g = np.zeros((self.E, T, goal_dim), np.float32)
        self.actions = np.zeros((self.E, T), np.int64)
        self.ep_len = np.zeros(self.E, np.int64)
        self.ptr, self.size = 0, 0

    def store(self, obs, ag, g, actions, ep_len):
        """Add a batch of episodes; returns their indices."""
        idx = (self.ptr + np.arange(len(ep_len))) % self.E
        self.obs[idx], self.ag[idx], self.g[idx], self.actions[idx], self.ep_len[idx] = obs, ag, g, actions, ep_len
        self.ptr, self.size = (self.ptr + len(ep_len)) % self.E, min(self.size + len(ep_len), self.E)
        return idx

    def sample(self, batch_size):
        n = self.ep_len[:self.size]  # episodes drawn in proportion to their length: transitions uniformly, as HER
        e = self.rng.choice(self.size, batch_size, p=n / n.sum())  # does (short, successful episodes not over-weighted)
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


# ---- ReenGAGE (discrete actions): what differs from her_ddpg.py ----
# DQN in place of DDPG: one Q-network with a value per action, Huber TD loss, epsilon-greedy collection; then the
# goal-gradient term against the soft target.

def soft_value(q, tau):
    """Eq. (31) without r: sum_a softmax(Q / tau)_a Q_a; tau = 0 gives max_a Q_a (with autodiff's gradient)."""
    return q.max(-1).values if tau == 0 else (torch.softmax(q / tau, -1) * q).sum(-1)


def reengage_dqn_loss(o, a, r, o2, g, d, q_net, q_target, gamma, args, rewards=(-1.0, 0.0)):
    """Eq. (32) (--target grad) or Eq. (33) (both, boltzmann) -> (loss, td_loss, grad_match, Q_a). g: raw floats."""
    g2, g1 = (g.detach().requires_grad_(args.alpha > 0) for _ in range(2))
    with torch.set_grad_enabled(args.alpha > 0):  # alpha = 0: no goal gradients, exactly DQN + HER's loss
        q2 = q_target(torch.cat([o2, g2], -1))
        y_soft = r + gamma * (1 - d) * soft_value(q2, args.tau)  # Eq. (31)
        grad_y = torch.autograd.grad(y_soft.sum(), g2)[0] if args.alpha > 0 else None  # G_y: gamma once, R const
    y = y_soft if args.target != "grad" else r + gamma * (1 - d) * q2.max(-1).values  # Eq. (33) / Eq. (29)
    q = q_net(torch.cat([o, g1], -1)).gather(-1, a.unsqueeze(-1)).squeeze(-1)  # Q_a, a = the buffer's action
    td_loss = F.smooth_l1_loss(q, y.detach())  # Huber, as DQN (Mnih et al. 2015)
    if args.alpha == 0:
        return td_loss, td_loss, torch.zeros(()), q
    grad_q = torch.autograd.grad(q.sum(), g1, create_graph=True)[0]  # G_Q by double backprop, so the loss trains it
    mask = (r == rewards[0]).float().unsqueeze(-1)  # Eq. (9): only where r = r_fail (there grad_g r = 0)
    grad_match = (mask * (grad_q - grad_y) ** 2).mean()  # MSE over batch AND goal dims (the authors' alpha)
    return td_loss + args.alpha * grad_match, td_loss, grad_match, q


def update(batch, q_net, q_target, optimizer, args, gamma, rewards):
    """One gradient step on a relabelled batch (tensors); returns the logged losses."""
    o, a, r, o2, g, d = batch
    loss, td_loss, grad_match, q = reengage_dqn_loss(o, a, r, o2, g, d, q_net, q_target, gamma, args, rewards)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "td_loss": td_loss.item(), "grad_match": grad_match.item(),
            "q_values": q.mean().item(), "masked_fraction": (r == rewards[0]).float().mean().item()}


def select_action(q_net, x, explore, args, rng):
    """Greedy argmax; collecting: epsilon-greedy, or a sample of softmax(Q / tau) with --target boltzmann."""
    with torch.no_grad():
        q = q_net(x)
    if explore and args.target == "boltzmann":
        probs = torch.softmax(q / args.tau, -1).cpu().numpy()
        return (rng.random((len(probs), 1)) < probs.cumsum(-1)).argmax(-1)  # inverse CDF
    a = q.argmax(-1).cpu().numpy()
    if explore:
        a = np.where(rng.random(len(a)) < args.random_eps, rng.integers(0, q.shape[-1], len(a)), a)
    return a
# ---- end ----


def soft_update(net, target, polyak):
    """target <- polyak * target + (1 - polyak) * net."""
    with torch.no_grad():
        for p, p_t in zip(net.parameters(), target.parameters()):
            p_t.lerp_(p, 1 - polyak)


class Episodes(NamedTuple):  # one episode per env
    obs: np.ndarray  # [n, T+1, obs_dim]
    ag: np.ndarray  # [n, T+1, goal_dim]
    g: np.ndarray  # [n, T, goal_dim]
    actions: np.ndarray  # [n, T] action indices
    ep_len: np.ndarray  # [n]
    success: np.ndarray  # [n], is_success at each episode's final step
    ret: np.ndarray  # [n], undiscounted env return


def rollout(vec_env, q_net, T, device, args, rng, *, explore):
    """One episode in each env (reset together, stepped in lockstep); explore: epsilon-greedy (or Boltzmann)."""
    n = vec_env.num_envs
    ob, _ = vec_env.reset()
    obs, ag = (np.zeros((n, T + 1, ob[k].shape[-1]), np.float32) for k in ("observation", "achieved_goal"))
    g = np.zeros((n, T, ob["desired_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T), np.int64)
    ep_len, success, ret, running = np.full(n, T), np.zeros(n), np.zeros(n), np.ones(n, bool)
    obs[:, 0], ag[:, 0] = ob["observation"], ob["achieved_goal"]
    for t in range(T):
        g[:, t] = ob["desired_goal"]
        x = np.concatenate([ob["observation"], ob["desired_goal"]], -1).astype(np.float32)
        a = select_action(q_net, torch.as_tensor(x, device=device), explore, args, rng)
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


def evaluate(vec_env, q_net, T, device, n_episodes, args, rng):
    """Greedy policy of the current network; success = is_success at each episode's final step (bit flipping ends on
    success, so: the goal was hit). Returns (success rate, return)."""
    successes, returns = [], []
    while len(successes) < n_episodes:
        ep = rollout(vec_env, q_net, T, device, args, rng, explore=False)
        successes += list(ep.success)
        returns += list(ep.ret)
    return float(np.mean(successes[:n_episodes])), float(np.mean(returns[:n_episodes]))


def make_env(args, **kwargs):
    return envs.make(args.env, **kwargs)


def make_vec_env(args, n):
    """n copies of the goal env. rollout() resets them all at each cycle's start; an env whose episode ends early
    is auto-reset by the next step, and rollout() stores nothing past that episode's end."""
    return gym.vector.SyncVectorEnv([lambda: make_env(args) for _ in range(n)])


def check_env(env, args):
    """One-line errors for envs and settings this script cannot handle; returns the env's (r_fail, r_success)."""
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise envs.EnvError(f"{args.env} has {env.action_space} actions; DQN here needs Discrete actions "
                            "(continuous actions: reengage.py)")
    if env.observation_space["achieved_goal"].shape != env.observation_space["desired_goal"].shape:
        raise envs.EnvError(f"{args.env}: achieved and desired goals differ in shape, so they cannot be relabelled")
    for name in ("total_timesteps", "num_envs", "eval_interval", "n_batches", "batch_size", "buffer_size",
                 "n_test_rollouts"):
        if getattr(args, name) < (0 if name == "n_batches" else 1):
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.random_eps <= 1 or not 0 <= args.polyak <= 1 or args.replay_k < 0:
        raise envs.EnvError("--random-eps and --polyak must lie in [0, 1] and --replay-k must be >= 0")
    if args.tau < 0 or args.alpha < 0 or (args.target == "boltzmann" and args.tau == 0):
        raise envs.EnvError("--tau and --alpha must be >= 0, and --target boltzmann needs --tau > 0")
    return envs.sparse_rewards(env)  # -1/0 or 0/1: the mask follows it; a dense reward is refused


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
    dims = [env.observation_space[k].shape[0] for k in ("observation", "desired_goal")]
    q_net = QNetwork(*dims, int(env.action_space.n), saved.hidden_dims)
    q_net.load_state_dict(ckpt["q_net"])
    vec_env = make_vec_env(saved, saved.num_envs)
    vec_env.reset(seed=args.seed)
    sr, ret = evaluate(vec_env, q_net, envs.horizon(env), "cpu", args.n_test_rollouts, saved,
                       np.random.default_rng(args.seed))
    print(f"{saved.env}: success rate {sr:.3f}, mean return {ret:.2f} over {args.n_test_rollouts} episodes")
    vec_env.close()
    return sr


def seed_everything(args):
    """Seed random, numpy and torch, set the torch threads; returns (device, numpy generator)."""
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    return torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu"), np.random.default_rng(args.seed)


def make_learner(env, args, device):
    """Q-network, its target copy and the optimiser."""
    dims = (env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0],
            int(env.action_space.n), args.hidden_dims)
    q_net, q_target = QNetwork(*dims).to(device), QNetwork(*dims).to(device)
    q_target.load_state_dict(q_net.state_dict())
    return q_net, q_target, torch.optim.Adam(q_net.parameters(), lr=args.lr, fused=True)  # fused: faster steps


def start_run(env, args):
    """The run's folder, its TensorBoard writer and the header line."""
    run_dir = f"runs/{args.env.replace(':', '_')}__{ALGO}__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    print(f"{ALGO} | {env.spec.id} | {args.total_timesteps:,} env steps | seed {args.seed} | run {run_dir} | "
          "tensorboard --logdir runs", flush=True)
    return run_dir, writer


def log_evaluation(writer, global_step, args, sr, eval_ret, losses, grad_steps, episodes, start_time):
    """TensorBoard scalars and the console line of one evaluation."""
    elapsed = time.time() - start_time
    scalars = {**{f"losses/{k}": v for k, v in losses.items()}, "eval/success_rate": sr,
               "eval/episodic_return": eval_ret, "charts/SPS": int(global_step / elapsed),
               "charts/gradient_steps": grad_steps, "charts/episodes": episodes}
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, global_step)
    left = elapsed / global_step * max(args.total_timesteps - global_step, 0)
    print(f"step {global_step:>8}/{args.total_timesteps} | success {sr:.2f} | return {eval_ret:7.2f} | "
          f"SPS {int(global_step / elapsed):>5} | {elapsed:5.0f}s elapsed, ~{left:.0f}s left", flush=True)


def main(args):
    fill_defaults(args)
    if args.eval_checkpoint:
        return load_and_evaluate(args)
    device, rng = seed_everything(args)

    # envs: one in this process for the spaces and the vectorised reward, num_envs for collecting
    env = make_env(args)
    rewards = check_env(env, args)
    T = envs.horizon(env)
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=args.seed)
    q_net, q_target, optimizer = make_learner(env, args, device)
    buffer = EpisodeBuffer(args.buffer_size, T, obs_dim, goal_dim, env.unwrapped, args.replay_strategy,
                           args.replay_k, rng)
    run_dir, writer = start_run(env, args)
    ckpt_path = f"{run_dir}/{ALGO}.pt"

    global_step, grad_steps, next_eval, start_time, sr, losses = 0, 0, args.eval_interval, time.time(), 0.0, {}
    try:
        while global_step < args.total_timesteps:
            # collect one episode per env with exploration and store it
            ep = rollout(vec_env, q_net, T, device, args, rng, explore=True)
            buffer.store(ep.obs, ep.ag, ep.g, ep.actions, ep.ep_len)
            global_step += int(ep.ep_len.sum())
            writer.add_scalar("charts/success_rate", ep.success.mean(), global_step)
            writer.add_scalar("charts/episodic_return", ep.ret.mean(), global_step)

            # a burst of updates on relabelled batches, then one Polyak update of the target
            for _ in range(args.n_batches):
                b = buffer.sample(args.batch_size)
                batch = [torch.as_tensor(v, device=device) for v in b]
                losses = update(batch, q_net, q_target, optimizer, args, args.gamma, rewards)
                grad_steps += 1
            soft_update(q_net, q_target, args.polyak)

            # every eval_interval env steps and at the end: evaluate the greedy policy, log, checkpoint
            if global_step < next_eval and global_step < args.total_timesteps:
                continue
            next_eval = (global_step // args.eval_interval + 1) * args.eval_interval
            sr, eval_ret = evaluate(vec_env, q_net, T, device, args.n_test_rollouts, args, rng)
            log_evaluation(writer, global_step, args, sr, eval_ret, losses, grad_steps, buffer.size, start_time)
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
