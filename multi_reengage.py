# SPDX-License-Identifier: MIT -- docs: docs/multi_reengage.md
"""Multi-ReenGAGE: many simultaneous sparse goals (Levine & Feizi, AAAI 2023, Sec. "Multi-ReenGAGE: ReenGAGE for
Multiple Simultaneous Goals" and App. "Multi-ReenGAGE Implementation Details"), on DDPG.

Idea: the agent is rewarded for standing on any one of up to n_max = 200 goal cells given at once. The goal set enters
as n_max slots (b_i, x_i, y_i): gate b_i = 1 for an active goal, 0 for padding. A DeepSets critic pools one embedding
per slot, weighted by b_i^2. Read as a function of the gates, Q's gradient dQ/db_i says how much goal i is worth from
here, and it obeys its own Bellman equation: so, as in ReenGAGE, the critic also learns to match the target's gradient
with respect to the gates, plus the known reward gradient dR/db_i = 2 R_item(s', g_i). No HER: the goal space (sets of
cells) is far larger than the state space, so there is nothing useful to relabel with.

Equations implemented (each marked in the code):
  reward:        R(s', g) = sum_i b_i^2 R_item(s', g_i), R_item = 1[round(pos(s')) = g_i]   (Eq. 13-14, 38; the
                 env's compute_reward_per_goal, as the authors' code gets it: the count of goals reached)
  critic:        Q(s, a, g) = HeadQ([h, z, a]),  h = (1/n_max) sum_i b_i^2 E(x_i, y_i, z)    (Eq. 36, DeepSets)
  actor:         pi(s, g) = max_u tanh(HeadPi([h_pi, z])), h_pi = (1/n_max) sum_i b_i E(x_i, y_i, z), no gradient
                 into E
  value target:  y = r + gamma Q'(s', pi'(s', g), g)                                     (DDPG; no clip, no done)
  gate target:   G_y = dy/db' (through Q' only; pi' sees the gates without gradient) + 2 R_item(s', g)   (Eq. 39)
  current grad:  G_Q = dQ(s, a, g)/db by double backpropagation                                        (Eq. 37)
  critic loss:   mean_B (Q - y)^2 + alpha mean_{B x n_max} (G_Q - G_y)^2                         (Eq. 19/40)
  actor loss:    -mean Q(s, pi(s, g), g)
  targets:       theta' <- polyak theta' + (1 - polyak) theta, after every gradient step
z, the non-goal state, is [achieved_goal, observation]. The encoder E belongs to the critic and is trained only by the
critic loss; the actor and the target actor read the embeddings of the critic and the target critic (the paper's
shared encoder, App. "Shared Encoder Ablation Study"). alpha is the authors' code value (alevine0/ReenGAGE,
multi_reengage_ddpg.py, --gradient_reg): the gradient error is averaged over all n_max slots, so the paper's legend
"alpha = 20/n_max" is --alpha 20 here. alpha = 0 is the paper's DDPG baseline (same architecture, encoder shared).

Exactness notes: only active slots are encoded. Padding contributes b^2 E = 0 to h and has dQ/db = 2 b (...) = 0 and
R_item = 0, so dropping it changes no value or gradient; the gradient error is still divided by B x n_max. With gates
in {0, 1}, b and b^2 pool to the same h, so the actor reuses the critic's pooled embedding (detached).

Deviations from the paper (App. Table 4): smaller default networks (encoder 2 x 64, heads 64 against 2 x 400, 400;
--paper restores them), batch 64 off DriveSeek (Table 4: 256) and a 40k env-step default budget (the paper: 160k).

Usage:
  python multi_reengage.py                                        # DriveSeek, alpha 20, 40k env steps
  python multi_reengage.py --alpha 0                              # the DDPG baseline, same architecture
  python multi_reengage.py --env NoisySeek --alpha 100            # noise 0.1 there (Table 4)
  python multi_reengage.py --paper --total-timesteps 160000 --cuda # Table 4 exactly
  python multi_reengage.py --eval-checkpoint runs/<run>/multi_reengage.pt
"""

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

ALGO = "multi_reengage"


@dataclass
class Args:
    env: str = "DriveSeek"
    """goal-set env with a per-goal reward: DriveSeek or NoisySeek (or a Gymnasium id of such an env)"""
    alpha: float = 20.0
    """Multi-ReenGAGE weight of mean_{batch, n_max slots} (dQ/db - dy/db)^2; 0 gives the DDPG baseline"""
    seed: int = 1
    """seed of random, numpy, torch and the envs"""
    total_timesteps: int = 40_000
    """training env steps, all envs counted, random episodes included"""
    num_envs: int = 1
    """parallel envs, stepped in lockstep; each round collects one episode from each"""
    update_schedule: Literal["step", "episode"] = "step"
    """one gradient step per env step, taken after every env step (step: Table 4) or all after the episode (episode)"""
    random_episodes: int = 25
    """episodes of uniformly random actions before learning starts (25 x 40 steps = Table 4's 1000 steps)"""
    eval_interval: int = 4000
    """env steps between evaluations; one more ends the run"""
    n_test_rollouts: int = 100
    """deterministic evaluation episodes per evaluation"""
    batch_size: Optional[int] = None
    """transitions per gradient step (unset: 256 on DriveSeek and with --paper, as in Table 4; 64 elsewhere)"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions"""
    gamma: float = 0.95
    """discount"""
    polyak: float = 0.995
    """target smoothing: target <- polyak * target + (1 - polyak) * online, after every gradient step"""
    lr: float = 1e-3
    """Adam learning rate of actor and critic"""
    noise_eps: Optional[float] = None
    """std of the Gaussian exploration noise, in units of max_u (unset: 0.05 on DriveSeek, 0.1 elsewhere; Table 4)"""
    encoder_dims: Optional[List[int]] = None
    """hidden layer widths of the per-goal encoder E, ReLU (unset: 64 64; 400 400 with --paper)"""
    embed_dim: int = 20
    """per-goal embedding size (the encoder's output)"""
    hidden_dims: Optional[List[int]] = None
    """hidden layer widths of the actor's and the critic's heads, ReLU (unset: 64; 400 with --paper)"""
    paper: bool = False
    """Table 4's networks and batch for the flags left unset: encoder 400 400, heads 400, batch 256"""
    save_model: bool = False
    """write actor, critic and args to runs/<run>/multi_reengage.pt after each evaluation and at the end"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint for --n-test-rollouts episodes instead of training"""
    torch_threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default, every core)"""
    torch_deterministic: bool = True
    """use deterministic torch algorithms"""
    cuda: bool = False
    """train on the GPU if one is available"""


# Defaults of the flags left unset, per env (noise and DriveSeek's batch: Table 4) and for --paper (Table 4's networks)
ENV_DEFAULTS = {
    "default": dict(noise_eps=0.1, batch_size=64, encoder_dims=[64, 64], hidden_dims=[64]),
    "DriveSeek": dict(noise_eps=0.05, batch_size=256, encoder_dims=[64, 64], hidden_dims=[64]),
}
PAPER_DEFAULTS = dict(batch_size=256, encoder_dims=[400, 400], hidden_dims=[400])


def fill_defaults(args):
    """Set every flag left unset (None) to its per-env default (Table 4's networks first with --paper)."""
    name = envs.parse(args.env)[0].split("-v")[0]
    defaults = {**ENV_DEFAULTS.get(name, ENV_DEFAULTS["default"]), **(PAPER_DEFAULTS if args.paper else {})}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def mlp(in_dim, out_dim, hidden_dims, activation=nn.ReLU):
    layers, dims = [], [in_dim, *hidden_dims]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


class Batch(NamedTuple):
    obs: np.ndarray  # z = [achieved goal, observation]
    actions: np.ndarray
    rewards: np.ndarray  # the count of goals reached at s' (Eq. 14)
    next_obs: np.ndarray
    g: np.ndarray  # the goal set, flat [n_max * 3]
    dones: np.ndarray
    r_item: np.ndarray  # per-goal rewards R_item(s', g_i) [n_max]


# ---- Multi-ReenGAGE: what differs from her_ddpg.py ----
def pack(goals, n_max):
    """Flat goal tensors [B, n_max * 3] -> the active slots: gates b [N], positions xy [N, 2], their row seg [N] and
    slot index [N]. Padding slots (b = 0) are dropped: they add nothing to the b^2-gated sum."""
    G = goals.view(len(goals), n_max, 3)
    seg, slot = (G[..., 0] != 0).nonzero(as_tuple=True)
    return G[seg, slot, 0], G[seg, slot, 1:], seg, slot


class Critic(nn.Module):
    """Q(s, a, g) = HeadQ([h, z, a]) with h = (1/n_max) sum_i b_i^2 E([x_i, y_i, z]); E is the shared encoder."""

    def __init__(self, z_dim, act_dim, encoder_dims, embed_dim, hidden_dims, n_max, max_u):
        super().__init__()
        self.encoder = mlp(2 + z_dim, embed_dim, encoder_dims)
        self.head = mlp(embed_dim + z_dim + act_dim, 1, hidden_dims)
        self.n_max, self.max_u = n_max, max_u

    def embed(self, b, xy, seg, z, power=2):
        """h = (1/n_max) sum over the active slots of row seg of b^power E([xy, z]): DeepSets pooling (Eq. 36)."""
        e = self.encoder(torch.cat([xy, z[seg]], -1))
        pooled = torch.zeros(len(z), e.shape[-1], device=z.device, dtype=e.dtype)
        return pooled.index_add(0, seg, b.unsqueeze(-1) ** power * e) / self.n_max

    def q(self, h, z, a):
        return self.head(torch.cat([h, z, a / self.max_u], -1)).squeeze(-1)

    def forward(self, b, xy, seg, z, a):
        return self.q(self.embed(b, xy, seg, z), z, a)


class Actor(nn.Module):
    """pi(s, g) = max_u tanh(HeadPi([h_pi, z])); h_pi comes from the critic's encoder, without gradient."""

    def __init__(self, z_dim, act_dim, embed_dim, hidden_dims, max_u):
        super().__init__()
        self.head, self.max_u = mlp(embed_dim + z_dim, act_dim, hidden_dims), max_u

    def forward(self, h, z):
        return self.max_u * torch.tanh(self.head(torch.cat([h.detach(), z], -1)))


def policy(actor, critic, z, goals):
    """pi(s, g) from the critic's pooled embedding (gates b, no gradient)."""
    with torch.no_grad():
        b, xy, seg, _ = pack(goals, critic.n_max)
        h = critic.embed(b, xy, seg, z, power=1)
        return actor(h, z)


class EpisodeBuffer:
    """Whole episodes: z[E, T+1] (= [achieved goal, observation]), ag[E, T+1], actions[E, T], and one goal set per
    episode (goals are fixed within an episode). sample() draws uniform transitions; there is no relabeling."""

    def __init__(self, capacity, T, z_dim, ag_dim, goal_dim, act_dim, env, rng):
        self.E, self.T, self.env, self.rng = max(capacity // T, 1), T, env, rng
        self.z = np.zeros((self.E, T + 1, z_dim), np.float32)
        self.ag = np.zeros((self.E, T + 1, ag_dim), np.float32)
        self.goals = np.zeros((self.E, goal_dim), np.float32)
        self.actions = np.zeros((self.E, T, act_dim), np.float32)
        self.ptr, self.size, self.new, self.new_len = 0, 0, None, 0

    def store(self, z, ag, goals, actions):
        idx = (self.ptr + np.arange(len(goals))) % self.E
        self.z[idx], self.ag[idx], self.goals[idx], self.actions[idx] = z, ag, goals, actions
        self.ptr, self.size = (self.ptr + len(goals)) % self.E, min(self.size + len(goals), self.E)
        self.new, self.new_len = None, 0

    def stage(self, new, new_len):
        """Episodes in progress (z, ag, goals, actions): their first new_len transitions are sampled until store()."""
        self.new, self.new_len = new, new_len

    def sample(self, batch_size):
        """Uniform over the stored transitions and the staged ones."""
        n_old, n_new = self.size * self.T, len(self.new[2]) * self.new_len if self.new else 0
        i = self.rng.integers(0, n_old + n_new, batch_size)
        sources = [(self.z, self.ag, self.goals, self.actions, i[i < n_old], self.T)]
        if self.new:
            sources.append((*self.new, i[i >= n_old] - n_old, self.new_len))
        parts = [(z[e, t], a[e, t], z[e, t + 1], ag[e, t + 1], g[e])
                 for z, ag, g, a, idx, length in sources for e, t in [np.divmod(idx, length)]]
        z, actions, z2, ag2, goals = (np.concatenate(x) for x in zip(*parts))
        # Eq. (13-14): the per-goal rewards R_item(s', g_i), from the env; r = their sum (goals are distinct cells)
        r_item = self.env.compute_reward_per_goal(ag2, goals).astype(np.float32)
        dones = np.zeros(batch_size, np.float32)  # the goal-set envs never end an episode early
        return Batch(z, actions, r_item.sum(-1), z2, goals, dones, r_item)


def td_target(r, d, q_next, gamma):
    """y = r + gamma (1 - d) Q'(s', pi'(s')), unclipped: r counts goals, it is not a (-1, 0) or (0, 1) reward."""
    return r + gamma * (1 - d) * q_next


def critic_loss_fn(z, a, r, z2, goals, d, r_item, critic, actor_target, critic_target, gamma, alpha):
    """DDPG's value loss plus, for alpha > 0, the gate-gradient term (Eq. 19/40); the first seven arguments are a
    Batch of tensors, goals flat [B, n_max * 3] and r_item [B, n_max]. Returns the loss, the gradient-matching term
    and Q."""
    n_max = critic.n_max
    b, xy, seg, slot = pack(goals, n_max)  # s and s' share the goal set
    if alpha == 0:  # the DDPG baseline
        with torch.no_grad():
            h2 = critic_target.embed(b, xy, seg, z2)
            y = td_target(r, d, critic_target.q(h2, z2, actor_target(h2, z2)), gamma)
        q = critic(b, xy, seg, z, a)
        return (q - y).pow(2).mean(), torch.zeros(()), q
    # target branch: y and its gradient w.r.t. the gates of s' (through Q' only: pi' reads h2 detached)
    b2 = b.detach().requires_grad_(True)
    h2 = critic_target.embed(b2, xy, seg, z2)  # b^2 gate; equal to pi''s b-pooled input for b in {0, 1}
    y = td_target(r, d, critic_target.q(h2, z2, actor_target(h2, z2)), gamma)
    grad_y = torch.autograd.grad(y.sum(), b2)[0] + 2.0 * r_item[seg, slot]  # Eq. 39: + dR/db_i = 2 b_i R_item
    # current branch: dQ/db by double backpropagation (Eq. 37), so the loss can train it
    b1 = b.detach().requires_grad_(True)
    q = critic(b1, xy, seg, z, a)
    grad_q = torch.autograd.grad(q.sum(), b1, create_graph=True)[0]
    # mean over B x n_max slots; padding slots have grad_q = grad_y = 0 exactly, so they only count in the divisor
    grad_match = (grad_q - grad_y).pow(2).sum() / (len(z) * n_max)
    return (q - y.detach()).pow(2).mean() + alpha * grad_match, grad_match, q


def update(batch, actor, critic, actor_target, critic_target, actor_opt, critic_opt, args, gamma):
    """One gradient step of critic and actor on a batch of tensors; returns the logged losses."""
    z, goals = batch.obs, batch.g
    critic_loss, grad_match, q = critic_loss_fn(*batch, critic, actor_target, critic_target, gamma, args.alpha)
    critic_opt.zero_grad()
    critic_loss.backward()
    critic_opt.step()

    with torch.no_grad():  # the actor never trains the encoder: h is a constant for the actor loss
        b, xy, seg, _ = pack(goals, critic.n_max)
        h = critic.embed(b, xy, seg, z)
    critic.requires_grad_(False)  # the actor loss only needs dQ/da
    actor_loss = -critic.q(h, z, actor(h, z)).mean()
    critic.requires_grad_(True)
    actor_opt.zero_grad()
    actor_loss.backward()
    actor_opt.step()
    return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "q_values": q.mean().item(),
            "grad_match": grad_match.item()}
# ---- end ----


def soft_update(net, target, polyak):
    """target <- polyak * target + (1 - polyak) * net."""
    with torch.no_grad():
        for p, p_t in zip(net.parameters(), target.parameters()):
            p_t.lerp_(p, 1 - polyak)


def train(n, buffer, nets, args, device):
    """n gradient steps, each followed by the Polyak step of both targets; returns the last losses."""
    losses = {}
    for _ in range(n):
        b = buffer.sample(args.batch_size)
        losses = update(Batch(*(torch.as_tensor(x, device=device) for x in b)), *nets, args, args.gamma)
        soft_update(nets[0], nets[2], args.polyak)
        soft_update(nets[1], nets[3], args.polyak)
    return losses


class Episodes(NamedTuple):
    z: np.ndarray  # [n, T+1, z_dim], z = [achieved goal, observation]
    ag: np.ndarray  # [n, T+1, ag_dim]
    g: np.ndarray  # [n, n_max * 3], one goal set per episode
    actions: np.ndarray  # [n, T, act_dim]
    success: np.ndarray  # [n], ever rewarded
    ret: np.ndarray  # [n], undiscounted return: the number of steps spent on a goal


def rollout(vec_env, actor, critic, T, device, args, rng, max_u, *, explore, random_actions=False, on_step=None):
    """One episode in each env (reset together, stepped in lockstep; these envs never end early). explore adds
    Gaussian noise; random_actions (the warm-up) acts uniformly at random instead. on_step((z, ag, goals, actions),
    t + 1) runs after env step t, the arrays filled up to it."""
    n = vec_env.num_envs
    ob, _ = vec_env.reset()
    z = np.zeros((n, T + 1, ob["achieved_goal"].shape[-1] + ob["observation"].shape[-1]), np.float32)
    ag = np.zeros((n, T + 1, ob["achieved_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T, vec_env.single_action_space.shape[0]), np.float32)
    goals, ret, success = ob["desired_goal"].copy(), np.zeros(n), np.zeros(n)
    z[:, 0], ag[:, 0] = np.concatenate([ob["achieved_goal"], ob["observation"]], -1), ob["achieved_goal"]
    for t in range(T):
        if random_actions:
            a = rng.uniform(-max_u, max_u, actions[:, t].shape)
        else:
            a = policy(actor, critic, *[torch.as_tensor(x, device=device) for x in (z[:, t], goals)]).cpu().numpy()
            if explore:
                a = np.clip(a + args.noise_eps * max_u * rng.standard_normal(a.shape), -max_u, max_u)
        ob, r, terminated, truncated, info = vec_env.step(a.astype(np.float32))
        actions[:, t], ag[:, t + 1] = a, ob["achieved_goal"]
        z[:, t + 1] = np.concatenate([ob["achieved_goal"], ob["observation"]], -1)
        ret += r
        success = np.maximum(success, info["is_success"])  # ever rewarded
        if on_step:
            on_step((z, ag, goals, actions), t + 1)
    return Episodes(z, ag, goals, actions, success, ret)


def evaluate(vec_env, actor, critic, T, device, n_episodes, args, rng, max_u):
    """Deterministic policy; returns (success rate, average episode reward: the paper's metric)."""
    successes, returns = [], []
    while len(successes) < n_episodes:
        ep = rollout(vec_env, actor, critic, T, device, args, rng, max_u, explore=False)
        successes += list(ep.success)
        returns += list(ep.ret)
    return float(np.mean(successes[:n_episodes])), float(np.mean(returns[:n_episodes]))


def make_env(args):
    return envs.make(args.env)


def make_vec_env(args, n):
    return gym.vector.SyncVectorEnv([lambda: make_env(args) for _ in range(n)])


def check_env(env, args):
    """One-line errors for envs and budgets this script cannot handle. The reward is the env's count of goals
    reached (compute_reward_per_goal), not a (-1, 0) or (0, 1) convention, so envs.sparse_rewards does not apply."""
    if not hasattr(env.unwrapped, "compute_reward_per_goal"):
        raise envs.EnvError(f"{args.env} has no per-goal reward (compute_reward_per_goal); Multi-ReenGAGE needs a "
                            f"goal-set env such as DriveSeek or NoisySeek")
    space = env.action_space
    if not isinstance(space, gym.spaces.Box) or len({*space.high, *-space.low}) != 1:  # one bound max_u = high = -low
        raise envs.EnvError(f"{args.env}: DDPG here needs a symmetric continuous action box, got {space}")
    for name in ("total_timesteps", "num_envs", "batch_size", "buffer_size", "eval_interval", "n_test_rollouts",
                 "embed_dim"):
        if getattr(args, name) < 1:
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not args.encoder_dims or not args.hidden_dims or min(args.encoder_dims + args.hidden_dims) < 1:
        raise envs.EnvError("--encoder-dims and --hidden-dims need at least one positive width each")
    if args.alpha < 0 or args.random_episodes < 0 or args.noise_eps < 0 or not 0 <= args.polyak <= 1:
        raise envs.EnvError("--alpha, --random-episodes and --noise-eps must be >= 0 and --polyak must lie in [0, 1]")


def make_nets(env, args):
    """Actor and critic for this env's z = [achieved goal, observation] and action sizes."""
    z_dim = sum(env.observation_space[k].shape[0] for k in ("achieved_goal", "observation"))
    act_dim, max_u = env.action_space.shape[0], float(env.action_space.high[0])
    critic = Critic(z_dim, act_dim, args.encoder_dims, args.embed_dim, args.hidden_dims, env.unwrapped.n_max, max_u)
    return Actor(z_dim, act_dim, args.embed_dim, args.hidden_dims, max_u), critic


def save_checkpoint(path, actor, critic, args):
    """Tensors and plain types only, so loading needs no code from the file (weights_only=True)."""
    torch.save({"algo": ALGO, "actor": actor.state_dict(), "critic": critic.state_dict(), "args": asdict(args)}, path)


def load_checkpoint(path):
    """A checkpoint this file wrote, loaded without running code from it; anything else is a one-line error."""
    if not os.path.isfile(path):
        raise envs.EnvError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # a foreign pickle makes torch warn before it refuses it: one line only
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # refuses pickled code
    except Exception as e:
        raise envs.EnvError(f"{path} is not a {ALGO}.py checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("algo") != ALGO:
        raise envs.EnvError(f"{path} is not a {ALGO}.py checkpoint")
    return ckpt


def load_and_evaluate(args):
    """Evaluate a saved actor (with the critic's encoder): success rate and average reward."""
    ckpt = load_checkpoint(args.eval_checkpoint)
    saved = Args(**ckpt["args"])
    env = make_env(saved)
    actor, critic = make_nets(env, saved)
    actor.load_state_dict(ckpt["actor"])
    critic.load_state_dict(ckpt["critic"])
    vec_env = make_vec_env(saved, saved.num_envs)
    vec_env.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    sr, ret = evaluate(vec_env, actor, critic, envs.horizon(env), "cpu", args.n_test_rollouts, saved, rng,
                       critic.max_u)
    print(f"{saved.env}: success rate {sr:.3f}, mean return {ret:.2f} over {args.n_test_rollouts} episodes")
    vec_env.close()
    return ret


def seed_everything(args):
    """Seed random, numpy and torch; set the threads; returns (device, rng)."""
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    return torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu"), np.random.default_rng(args.seed)


def make_learner(env, args, device):
    """Actor, critic, their targets (frozen copies) and the two Adam optimisers."""
    actor, critic = [net.to(device) for net in make_nets(env, args)]
    actor_target, critic_target = [net.to(device) for net in make_nets(env, args)]
    for net, target in ((actor, actor_target), (critic, critic_target)):
        target.load_state_dict(net.state_dict())
        target.requires_grad_(False)  # never optimised; the gate gradient needs gradients w.r.t. b only
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.lr, fused=True)  # fused: faster small updates
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr, fused=True)
    return actor, critic, actor_target, critic_target, actor_opt, critic_opt


def start_logging(env, args):
    """The run's directory and TensorBoard writer (with the hyper-parameter table); prints the header line."""
    run_dir = f"runs/{args.env.replace(':', '_')}__{ALGO}__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    print(f"{ALGO} | {env.spec.id} | {args.total_timesteps:,} env steps | seed {args.seed} | run {run_dir} | "
          f"tensorboard --logdir runs", flush=True)
    return run_dir, writer


def main(args):
    fill_defaults(args)
    if args.eval_checkpoint:
        return load_and_evaluate(args)
    device, rng = seed_everything(args)

    # envs: one in this process for the spaces and the per-goal reward, num_envs for collecting
    env = make_env(args)
    check_env(env, args)
    T = envs.horizon(env)
    ag_dim, goal_dim, obs_dim = (env.observation_space[k].shape[0] for k in ("achieved_goal", "desired_goal",
                                                                               "observation"))
    act_dim, max_u = env.action_space.shape[0], float(env.action_space.high[0])
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=args.seed)

    # networks, optimisers, buffer; the actor has no encoder of its own (it reads the critic's)
    actor, critic, *_ = nets = make_learner(env, args, device)
    buffer = EpisodeBuffer(args.buffer_size, T, ag_dim + obs_dim, ag_dim, goal_dim, act_dim, env.unwrapped, rng)
    run_dir, writer = start_logging(env, args)
    ckpt_path = f"{run_dir}/{ALGO}.pt"

    global_step, grad_steps, episodes, next_eval, start_time = 0, 0, 0, args.eval_interval, time.time()
    sr, ret_eval, losses, per_step = 0.0, 0.0, {}, args.update_schedule == "step"

    def on_step(new, new_len):  # Table 4: a gradient step after each env step; as in SB3's buffer, the newest included
        buffer.stage(new, new_len)
        losses.update(train(args.num_envs, buffer, nets, args, device))
    try:
        while global_step < args.total_timesteps:
            # collect one episode per env (uniformly random actions during the warm-up) and store it. Learning
            # starts after the random episodes (step), or with the round that completes them (episode)
            learning = episodes + (0 if per_step else args.num_envs) >= args.random_episodes
            ep = rollout(vec_env, actor, critic, T, device, args, rng, max_u, explore=True,
                         random_actions=episodes < args.random_episodes, on_step=learning and per_step and on_step)
            buffer.store(ep.z, ep.ag, ep.g, ep.actions)
            steps = T * args.num_envs
            if learning and not per_step:  # the episode schedule: all of the round's gradient steps now
                losses.update(train(steps, buffer, nets, args, device))
            global_step, episodes = global_step + steps, episodes + args.num_envs
            grad_steps += steps if learning else 0
            writer.add_scalar("charts/success_rate", ep.success.mean(), global_step)
            writer.add_scalar("charts/episodic_return", ep.ret.mean(), global_step)
            writer.add_scalar("stats/active_goals", float((ep.g[:, 0::3] != 0).sum(-1).mean()), global_step)

            if global_step < next_eval and global_step < args.total_timesteps:
                continue
            next_eval = (global_step // args.eval_interval + 1) * args.eval_interval

            # every eval_interval env steps and at the end: log, evaluate the deterministic policy, checkpoint
            for key, value in losses.items():
                writer.add_scalar(f"losses/{key}", value, global_step)
            sr, ret_eval = evaluate(vec_env, actor, critic, T, device, args.n_test_rollouts, args, rng, max_u)
            elapsed = time.time() - start_time
            sps = int(global_step / elapsed)
            writer.add_scalar("eval/success_rate", sr, global_step)
            writer.add_scalar("eval/episodic_return", ret_eval, global_step)
            for tag, value in (("SPS", sps), ("gradient_steps", grad_steps), ("episodes", buffer.size)):
                writer.add_scalar(f"charts/{tag}", value, global_step)
            left = elapsed / global_step * max(args.total_timesteps - global_step, 0)
            print(f"step {global_step:>8}/{args.total_timesteps} | success {sr:.2f} | return {ret_eval:7.2f} | "
                  f"SPS {sps:>5} | {elapsed:5.0f}s elapsed, ~{left:.0f}s left", flush=True)
            if args.save_model:
                save_checkpoint(ckpt_path, actor, critic, args)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}")
    finally:
        vec_env.close()
        env.close()
        writer.close()
    saved = ""
    if args.save_model:
        save_checkpoint(ckpt_path, actor, critic, args)
        saved = f" | checkpoint {ckpt_path} (evaluate: python {ALGO}.py --eval-checkpoint {ckpt_path})"
    print(f"{ALGO} done | success {sr:.2f} | {global_step:,} env steps | {grad_steps:,} gradient steps | "
          f"{time.time() - start_time:.0f} s{saved}", flush=True)
    return ret_eval


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminated run saves like Ctrl-C does
    try:
        main(tyro.cli(Args))
    except envs.EnvError as e:
        sys.exit(f"error: {e}")
