"""HDM: Hindsight Divergence Minimization (Zhang & Stadie, 2022), with the paper's Table 1 baselines as --algo.

Idea: goal-conditioned Q-learning and hindsight behaviour cloning both minimise a divergence between the policy's
state-action distribution and the hindsight ("expert") data. Worked out from first principles, the Q-learning half
gives HER's reward: 0 when the relabelled goal is the very next state, -1 otherwise. The behaviour-cloning half is
only sound where the cloned action actually helps, and the Q-function can tell: imitate a_t only when Q says it moves
the agent at least -ln gamma_hdm steps closer, Q(s, a, g) - max_a' Q(s', a', g) < ln gamma_hdm. One network is both
the Q-function and the Boltzmann policy pi = softmax(Q), so actions are discrete (continuous envs are discretised).

Equations implemented (the reward form the authors' code runs, ../shared/specs/hdm.md §3.2):
  relabel:    g = ag_{t+1+k}, k ~ U{0..L-t-1}, k = 0 with probability next_state_p; relabelled with probability
              future_p (0.85), else the episode's goal
  reward:     r = 0 if the goal was relabelled with k = 0 (the next state, by index), else -1   (Eq. 28, r=-1, beta=1)
  TD:         y = min(r + gamma Q'(s', argmax_a' Q(s', a', g), g), 0)  (double DQN); L_td = mean (Q(s, a, g) - y)^2
  gate:       w = 1[Q(s, a, g) - max_a' Q(s', a', g) < ln gamma_hdm]                                (Eq. 31)
  BC:         L_bc = -mean_batch w log softmax(Q(s, ., g))[a]                                       (Eq. 32)
  loss:       L_td + beta L_bc; Adam; every 10 steps Q' <- 0.995 Q' + 0.005 Q
--algo picks a row of Table 1 (same network, sampler and schedule):
  gcsl      only -mean log softmax(Q(s, ., g_bc))[a], g_bc = ag_{t+1+k} for every row; no TD, no target; acts by
            sampling softmax(Q)
  her01     L_td with r = 1 on next-state goals, 0 otherwise (target clipped to [0, 1/(1 - gamma)])
  her_sql   L_td with the soft backup y = r + gamma tau (logsumexp(Q'(s', .)/tau) - ln |A|), tau = 0.2
  her       L_td with r = (-1, 0);  her_hbc  L_td + beta L_bc with w = 1 on every row;  hdm  the gated loss above
Deviations from the paper: 2 x 256 hidden units and lr 1e-3 by default (the paper's [400, 300] and 5e-4 are
--hidden-dims 400 300 --lr 5e-4; ../shared/specs/hdm.md §9.1), 20 random episodes before training (paper 200), and
the target is clipped at 0 on every env (the authors' code leaves Four Rooms unclipped: --no-clip-target). The env
reward is never used in training unless --reward threshold asks for HER's usual distance reward; success
(evaluation) always uses it.

Usage:
  python hdm.py --env FetchReach                                   # the demo: 27 discrete actions, 6k env steps
  # Table 1's Four Rooms column with the paper's network and warm-up (--algo her | gcsl for the baselines):
  python hdm.py --env FourRooms --next-state-p 0.2 --total-timesteps 200000 \
      --hidden-dims 400 300 --lr 5e-4 --random-episodes 200
  python hdm.py --env BitFlip:n=10 --algo her --total-timesteps 20000
  python hdm.py --eval-checkpoint runs/<run>/hdm.pt --n-test-rollouts 100
"""

import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import List, Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter

import envs


@dataclass
class Args:
    env: str = "FetchReach"
    """goal env: a short name (FetchReach, FourRooms, BitFlip:n=10, ...) or a Gymnasium id; Box actions discretised"""
    algo: Literal["hdm", "her", "her01", "her_sql", "her_hbc", "gcsl"] = "hdm"
    """the method: HDM or a Table 1 baseline (see the docstring)"""
    seed: int = 1
    """seed of random, numpy, torch and the envs"""
    total_timesteps: int = 6_000
    """env steps, all envs and the random warm-up episodes counted"""
    num_envs: int = 1
    """parallel envs; one cycle collects one episode from each, then as many gradient steps as env steps (UTD 1)"""
    bins: int = 3
    """discretisation of each Box action dimension ({-1, 0, 1} for 3 bins)"""
    head: Literal["auto", "joint", "factorised"] = "auto"
    """Q over the joint discretised actions, or one head per action dimension with Q = sum_i Q_i; auto: factorised
    only when the joint action set exceeds 100"""
    reward: Literal["next_state", "threshold"] = "next_state"
    """training reward: the paper's self-supervised one (0 iff the goal is the next state) or the env's distance test"""
    gamma: float = 0.98
    """discount"""
    gamma_hdm: float = 0.85
    """the gate's threshold: imitate when Q(s, a, g) - max Q(s', ., g) < ln gamma_hdm (paper: 0.85 Four Rooms)"""
    beta: float = 1.0
    """weight of the behaviour-cloning term"""
    clip_target: bool = True
    """clip the TD target to the return's range (<= 0; her01: [0, 1/(1 - gamma)]); the authors' code clips on every
    env but Four Rooms"""
    sql_tau: float = 0.2
    """her_sql: temperature of the soft backup"""
    future_p: float = 0.85
    """hindsight relabelling ratio: the fraction of goals replaced by achieved ones"""
    next_state_p: float = 0.5
    """next-state relabelling ratio: the probability that a relabelled goal is the very next state (k = 0); paper: 0.2
    Four Rooms, 0.5 Lunar Lander, 0.6 the Sawyer tasks"""
    eps: float = 0.1
    """probability of a uniformly random action while collecting (gcsl samples softmax(Q) instead)"""
    random_episodes: int = 20
    """episodes of uniformly random actions before training (paper: 200)"""
    batch_size: int = 256
    """transitions per gradient step"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions"""
    lr: float = 1e-3
    """Adam learning rate (paper: 5e-4)"""
    hidden_dims: List[int] = field(default_factory=lambda: [256, 256])
    """hidden layer sizes (paper: 400 300)"""
    polyak: float = 0.995
    """target <- polyak * target + (1 - polyak) * main, every target_interval gradient steps"""
    target_interval: int = 10
    """gradient steps between target updates"""
    eval_interval: int = 1_000
    """env steps between evaluations (paper: 2000, one epoch of 40 episodes)"""
    n_test_rollouts: int = 20
    """greedy evaluation episodes per evaluation (paper: 50)"""
    save_model: bool = False
    """write the Q-network and args to runs/<run>/hdm.pt after each evaluation and at the end"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint for --n-test-rollouts episodes instead of training"""
    torch_threads: int = 1
    """PyTorch CPU threads; 1 is fastest for these small networks on a 2-core machine; 0 keeps PyTorch's default"""
    torch_deterministic: bool = True
    """use deterministic torch algorithms"""
    cuda: bool = False
    """train on the GPU if one is available"""


class QNetwork(nn.Module):
    """Q(s, ., g) = MLP([obs, g]) -> [dims, n]: one row of n values per action dimension (dims = 1: joint actions).
    It is also the policy, pi(a | s, g) = softmax(Q(s, ., g)); factorised, Q(s, a, g) = sum_i Q_i(s, a_i, g)."""

    def __init__(self, in_dim, dims, n, hidden_dims):
        super().__init__()
        layers, last = [], in_dim
        for h in hidden_dims:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        self.net, self.dims, self.n = nn.Sequential(*layers, nn.Linear(last, dims * n)), dims, n

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


class EpisodeBuffer:
    """Whole episodes as arrays obs[E, T+1], ag[E, T+1], g[E, T], actions[E, T, dims] (integers); sample() relabels.

    Episodes that end early (tasks that terminate on success) keep their length in ep_len; steps past it are unused.
    """

    def __init__(self, capacity, T, obs_dim, goal_dim, act_dims, rng):
        self.E, self.T, self.rng = max(capacity // T, 1), T, rng
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

    def sample(self, batch_size, future_p, next_state_p):
        """(s_t, a_t, s_{t+1}, ag_{t+1}, g, pos, g_bc). pos marks goals relabelled to the next state (k = 0), the
        only rows with the self-supervised reward 0; g_bc = ag_{t+1+k} is GCSL's goal for every row."""
        e = self.rng.integers(0, self.size, batch_size)
        L = self.ep_len[e]
        t = (self.rng.random(batch_size) * L).astype(np.int64)
        k = (self.rng.random(batch_size) * (L - t)).astype(np.int64)  # k in 0 .. L-t-1: goal index t+1 .. L
        k[self.rng.random(batch_size) < next_state_p] = 0
        relabel = self.rng.random(batch_size) < future_p
        g_bc = self.ag[e, t + 1 + k]
        g = np.where(relabel[:, None], g_bc, self.g[e, t])
        pos = (relabel & (k == 0)).astype(np.float32)
        return self.obs[e, t], self.actions[e, t], self.obs[e, t + 1], self.ag[e, t + 1], g, pos, g_bc


def hdm_loss(q_net, q_target, x, a, r, x2, x_bc, args):
    """The loss of --algo on one batch (inputs are [obs, goal]); returns (loss, stats)."""
    if args.algo == "gcsl":  # Eq. 12: hindsight behaviour cloning only
        bc_loss = -log_pi(q_net(x_bc), a).mean()
        return bc_loss, {"bc_loss": bc_loss.item()}
    q_all = q_net(x)
    q_sa = q_of(q_all, a)
    with torch.no_grad():
        q2_online, q2_target = q_net(x2), q_target(x2)
        if args.algo == "her_sql":  # soft backup on the target network
            y = r + args.gamma * soft_value(q2_target, args.sql_tau)
        else:  # double DQN: the online net picks a', the target net values it
            y = r + args.gamma * q_of(q2_target, q2_online.argmax(-1))
        if args.clip_target:  # the return's range (hdm.md §5: the authors' code clips on every env but Four Rooms)
            y = y.clamp(0, 1 / (1 - args.gamma)) if args.algo == "her01" else y.clamp(max=0.0)
        q2_max = q2_online.max(-1).values.sum(1)
    td_loss = (q_sa - y).pow(2).mean()  # no 1/2, as the authors' code
    stats = {"td_loss": td_loss.item(), "q_values": q_sa.mean().item()}
    if args.algo not in ("hdm", "her_hbc"):
        return td_loss, stats
    gate = (q_sa.detach() - q2_max < math.log(args.gamma_hdm)).float() if args.algo == "hdm" else torch.ones_like(r)
    bc_loss = -(gate * log_pi(q_all, a)).mean()  # Eq. 32: the mean runs over the whole batch, gated rows give 0
    stats.update(bc_loss=bc_loss.item(), gate_fraction=gate.mean().item())
    return td_loss + args.beta * bc_loss, stats


def select_action(q_net, x, explore, args, rng):
    """Greedy argmax; while collecting, eps-uniform (gcsl: a sample of softmax(Q))."""
    with torch.no_grad():
        q = q_net(x)
    if explore and args.algo == "gcsl":
        probs = torch.softmax(q, -1).cpu().numpy()
        a = (rng.random(probs.shape[:-1] + (1,)) < probs.cumsum(-1)).argmax(-1)  # inverse CDF per dimension
    else:
        a = q.argmax(-1).cpu().numpy()
    if explore and args.algo != "gcsl":
        random_a = rng.integers(0, q.shape[-1], a.shape)
        a = np.where(rng.random((len(a), 1)) < args.eps, random_a, a)
    return a  # [n_envs, dims]


def env_action(a, space):
    """[n_envs, dims] indices -> what the vector env takes (an index per env, or a vector per env if factorised)."""
    return a if isinstance(space, gym.spaces.MultiDiscrete) else a[:, 0]


def rollout(vec_env, q_net, T, device, explore, args, rng, warmup=False):
    """One episode in each env (reset together, stepped in lockstep); returns the episode arrays and stats."""
    n, space = vec_env.num_envs, vec_env.single_action_space
    ob, _ = vec_env.reset()
    dims = len(space.nvec) if isinstance(space, gym.spaces.MultiDiscrete) else 1
    obs = np.zeros((n, T + 1, ob["observation"].shape[-1]), np.float32)
    ag = np.zeros((n, T + 1, ob["achieved_goal"].shape[-1]), np.float32)
    g = np.zeros((n, T, ob["desired_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T, dims), np.int64)
    ep_len, success, ret = np.full(n, T), np.zeros(n), np.zeros(n)
    running = np.ones(n, bool)
    obs[:, 0], ag[:, 0] = ob["observation"], ob["achieved_goal"]
    for t in range(T):
        g[:, t] = ob["desired_goal"]
        if warmup:
            a = rng.integers(0, space.nvec if dims > 1 else space.n, (n, dims))
        else:
            x = np.concatenate([ob["observation"], ob["desired_goal"]], -1).astype(np.float32)
            x = torch.as_tensor(x, device=device)
            a = select_action(q_net, x, explore, args, rng)
        ob, r, terminated, truncated, info = vec_env.step(env_action(a, space))
        actions[:, t], obs[:, t + 1], ag[:, t + 1] = a, ob["observation"], ob["achieved_goal"]
        ret += r * running
        success = np.where(running, info["is_success"], success)  # success at the episode's final step
        ended = running & (terminated | (t == T - 1))
        ep_len[ended & terminated] = t + 1
        running &= ~ended
        if not running.any():
            break
    return obs, ag, g, actions, ep_len, success, ret


def evaluate(vec_env, q_net, T, device, n_episodes, args, rng):
    """Greedy policy; success = is_success at each episode's final step. Returns (success rate, return)."""
    successes, returns = [], []
    while len(successes) < n_episodes:
        *_, success, ret = rollout(vec_env, q_net, T, device, False, args, rng)
        successes += list(success)
        returns += list(ret)
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
    """One-line errors for envs and settings this script cannot handle."""
    space = env.action_space
    if not isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        raise envs.EnvError(f"{args.env} has {space} actions; HDM needs discrete (or discretisable Box) actions")
    ob_space = env.observation_space
    if ob_space["achieved_goal"].shape != ob_space["desired_goal"].shape:
        raise envs.EnvError(f"{args.env}: achieved and desired goals differ in shape, so they cannot be relabelled")
    for name in ("total_timesteps", "num_envs", "batch_size", "buffer_size", "target_interval", "eval_interval",
                 "n_test_rollouts"):
        if getattr(args, name) < 1:
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("future_p", "next_state_p", "eps", "polyak"):
        if not 0 <= getattr(args, name) <= 1:
            raise envs.EnvError(f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(args, name)}")
    if not 0 < args.gamma_hdm <= 1 or not 0 < args.gamma < 1:
        raise envs.EnvError("--gamma-hdm must lie in (0, 1] and --gamma in (0, 1)")


def save_checkpoint(path, q_net, args):
    torch.save({"q_net": q_net.state_dict(), "args": asdict(args)}, path)


def load_and_evaluate(args):
    """Evaluate a saved Q-network greedily over --n-test-rollouts episodes."""
    if not os.path.isfile(args.eval_checkpoint):
        raise envs.EnvError(f"no checkpoint at {args.eval_checkpoint}")
    ckpt = torch.load(args.eval_checkpoint, map_location="cpu", weights_only=False)
    saved = Args(**ckpt["args"])
    env = make_env(saved)
    in_dim = sum(env.observation_space[k].shape[0] for k in ("observation", "desired_goal"))
    q_net = QNetwork(in_dim, *action_shape(env.action_space), saved.hidden_dims)
    q_net.load_state_dict(ckpt["q_net"])
    vec_env = make_vec_env(saved, saved.num_envs)
    vec_env.reset(seed=args.seed)
    sr, ret = evaluate(vec_env, q_net, envs.horizon(env), "cpu", args.n_test_rollouts, saved,
                       np.random.default_rng(args.seed))
    print(f"{saved.env}: success rate {sr:.3f}, mean return {ret:.2f} over {args.n_test_rollouts} episodes")
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

    # envs: one in this process for the spaces and the distance reward, num_envs for collecting
    env = make_env(args)
    check_env(env, args)
    T = envs.horizon(env)
    obs_dim, goal_dim = env.observation_space["observation"].shape[0], env.observation_space["desired_goal"].shape[0]
    dims, n_actions = action_shape(env.action_space)
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=args.seed)

    # one network: the Q-function and the policy; its target copy; the buffer
    q_net = QNetwork(obs_dim + goal_dim, dims, n_actions, args.hidden_dims).to(device)
    q_target = QNetwork(obs_dim + goal_dim, dims, n_actions, args.hidden_dims).to(device)
    q_target.load_state_dict(q_net.state_dict())
    optimizer = torch.optim.Adam(q_net.parameters(), lr=args.lr)
    buffer = EpisodeBuffer(args.buffer_size, T, obs_dim, goal_dim, dims, rng)

    run_name = f"{args.env.replace(':', '_')}__hdm_{args.algo}__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    ckpt_path = f"runs/{run_name}/hdm.pt"

    def to_tensor(*arrays):
        return [torch.as_tensor(a, device=device) for a in arrays]

    global_step, grad_steps, episodes, epoch, start_time, sr = 0, 0, 0, 0, time.time(), 0.0
    try:
        while global_step < args.total_timesteps:
            # collect one episode per env (uniformly random during warm-up) and store it
            warmup = episodes < args.random_episodes
            obs, ag, g, actions, ep_len, success, ret = rollout(vec_env, q_net, T, device, True, args, rng, warmup)
            buffer.store(obs, ag, g, actions, ep_len)
            steps = int(ep_len.sum())
            global_step += steps
            episodes += len(ep_len)
            writer.add_scalar("charts/success_rate", success.mean(), global_step)
            writer.add_scalar("charts/episodic_return", ret.mean(), global_step)
            writer.add_scalar("charts/ag_change", np.mean(np.linalg.norm(ag[:, 0] - ag[np.arange(len(ag)), ep_len],
                                                                         axis=-1)), global_step)
            if warmup:
                continue

            # as many gradient steps as env steps just collected (UTD 1)
            for _ in range(steps):
                o, a, o2, ag2, g_b, pos, g_bc = buffer.sample(args.batch_size, args.future_p, args.next_state_p)
                if args.reward == "next_state":  # Eq. 28: reward 0 only on goals relabelled to the next state
                    r = pos - 1.0
                else:  # HER's usual reward: the env's distance test
                    r = env.unwrapped.compute_reward(ag2, g_b, None).astype(np.float32)
                if args.algo == "her01":
                    r = r + 1.0  # (0, 1) instead of (-1, 0)
                x, x2, x_bc = (np.concatenate(p, -1) for p in ((o, g_b), (o2, g_b), (o, g_bc)))
                loss, stats = hdm_loss(q_net, q_target, *to_tensor(x, a, r.astype(np.float32), x2, x_bc), args)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                grad_steps += 1
                if grad_steps % args.target_interval == 0:
                    with torch.no_grad():
                        for p, p_t in zip(q_net.parameters(), q_target.parameters()):
                            p_t.lerp_(p, 1 - args.polyak)  # p_t = polyak p_t + (1 - polyak) p
            if global_step // args.eval_interval == (global_step - steps) // args.eval_interval and \
                    global_step < args.total_timesteps:
                continue

            # every eval_interval env steps and at the end: log, evaluate greedily, checkpoint
            epoch += 1
            for key, value in stats.items():
                writer.add_scalar(f"{'stats' if key == 'gate_fraction' else 'losses'}/{key}", value, global_step)
            writer.add_scalar("stats/positive_fraction", float((r == (1.0 if args.algo == "her01" else 0.0)).mean()),
                              global_step)
            sr, eval_ret = evaluate(vec_env, q_net, T, device, args.n_test_rollouts, args, rng)
            elapsed = time.time() - start_time
            sps = int(global_step / elapsed)
            writer.add_scalar("eval/success_rate", sr, global_step)
            writer.add_scalar("eval/episodic_return", eval_ret, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("charts/gradient_steps", grad_steps, global_step)
            writer.add_scalar("charts/episodes", episodes, global_step)
            left = elapsed / global_step * max(args.total_timesteps - global_step, 0)
            gate = f" | gate {stats['gate_fraction']:.2f}" if "gate_fraction" in stats else ""
            print(f"epoch {epoch:>3} | step {global_step:>8}/{args.total_timesteps} | success {sr:.2f} | "
                  f"return {eval_ret:7.2f}{gate} | SPS {sps:>5} | {elapsed:5.0f}s elapsed, ~{left:.0f}s left",
                  flush=True)
            if args.save_model:
                save_checkpoint(ckpt_path, q_net, args)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}")
    finally:
        vec_env.close()
        env.close()
        writer.close()
    if args.save_model:
        save_checkpoint(ckpt_path, q_net, args)
        print(f"checkpoint: {ckpt_path}\nevaluate it: python hdm.py --eval-checkpoint {ckpt_path}")
    return sr


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminated run saves like Ctrl-C does
    try:
        main(tyro.cli(Args))
    except envs.EnvError as e:
        sys.exit(f"error: {e}")
