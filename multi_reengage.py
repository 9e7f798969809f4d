"""Multi-ReenGAGE: many simultaneous sparse goals (Levine & Feizi, AAAI 2023, section 5 and appendix), on DDPG.

Idea: the agent is rewarded for standing on any one of up to n_max = 200 goal cells given at once. The goal set enters
as n_max slots (b_i, x_i, y_i): gate b_i = 1 for an active goal, 0 for padding. A DeepSets critic pools one embedding
per slot, weighted by b_i^2. Read as a function of the gates, Q's gradient dQ/db_i says how much goal i is worth from
here, and it obeys its own Bellman equation: so, as in ReenGAGE, the critic also learns to match the target's gradient
with respect to the gates, plus the known reward gradient dR/db_i = 2 R_item(s', g_i). No HER: the goal space (sets of
cells) is far larger than the state space, so there is nothing useful to relabel with.

Equations implemented (each marked in the code):
  reward:        R(s', g) = sum_i b_i^2 R_item(s', g_i), R_item = 1[round(pos(s')) = g_i]   (Eq. 13-14; given by the
                 env's compute_reward_per_goal, the way the paper's code gets it)
  critic:        Q(s, a, g) = HeadQ([h, z, a]),  h = (1/n_max) sum_i b_i^2 E(x_i, y_i, z)    (DeepSets, b^2 gate)
  actor:         pi(s, g) = tanh(HeadPi([h_pi, z])),  h_pi = (1/n_max) sum_i b_i E(x_i, y_i, z), no gradient into E
  value target:  y = r + gamma Q'(s', pi'(s', g), g)                                          (DDPG; no clip, no done)
  gate target:   G_y = dy/db' (through Q' only; pi' sees the gates without gradient) + 2 R_item(s', g)
  current grad:  G_Q = dQ(s, a, g)/db by double backpropagation
  critic loss:   mean_B (Q - y)^2 + alpha mean_{B x n_max} (G_Q - G_y)^2                         (Eq. 19/40)
  actor loss:    -mean Q(s, pi(s, g), g)
z, the non-goal state, is [achieved_goal, observation]. The encoder E belongs to the critic and is trained only by the
critic loss; the actor and the target actor read the embeddings of the critic and the target critic.
alpha is the authors' code value: the gradient error is averaged over all n_max slots, so the paper's legend
"alpha = 20/n_max" is --alpha 20 here. alpha = 0 is the paper's DDPG baseline (same architecture, encoder shared).

Exactness notes: only active slots are encoded. Padding contributes b^2 E = 0 to h and has dQ/db = 2 b (...) = 0 and
R_item = 0, so dropping it changes no value or gradient; the gradient error is still divided by B x n_max. With gates
in {0, 1}, b and b^2 pool to the same h, so the actor reuses the critic's pooled embedding (detached).

Deviations from the paper (../shared/specs/reengage.md §1.6, Table 4): updates run after each collected episode,
one per env step collected (the paper: one after every env step; same count). The defaults are smaller than Table 4
so that a run fits a CPU: encoder 2 x 64, embedding 20, heads 64, batch 64, 40k env steps (about 15 min on 2 cores),
against 2 x 400, 20, 400, batch 256 and 160k steps. `--paper` restores Table 4's widths and batch; they cost about
0.9 s per update on this CPU (the paper ran on a GPU).

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
from dataclasses import asdict, dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

import envs


@dataclass
class Args:
    env: str = "DriveSeek"
    """goal-set env with a per-goal reward: DriveSeek or NoisySeek (or a Gymnasium id of such an env)"""
    alpha: float = 20.0
    """Multi-ReenGAGE weight of mean_{batch, n_max slots} (dQ/db - dy/db)^2; 0 gives the DDPG baseline"""
    seed: int = 1
    """seed of random, numpy, torch and the envs"""
    total_timesteps: int = 40_000
    """training env steps, all envs counted"""
    num_envs: int = 1
    """parallel envs; each cycle collects one episode from each, then one gradient step per env step collected"""
    learning_starts: int = 1000
    """uniformly random actions and no updates for the first env steps"""
    batch_size: int = 64
    """transitions per gradient step (Table 4: 256)"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions"""
    gamma: float = 0.95
    """discount"""
    tau: float = 0.005
    """target <- (1 - tau) target + tau main, after every gradient step"""
    lr: float = 1e-3
    """Adam learning rate of actor and critic"""
    noise_std: Optional[float] = None
    """std of the Gaussian exploration noise; default 0.05 on DriveSeek, 0.1 elsewhere (Table 4)"""
    encoder_dim: int = 64
    """units of the encoder's two hidden layers (Table 4: 400)"""
    embed_dim: int = 20
    """per-goal embedding size"""
    head_dim: int = 64
    """units of the actor's and the critic's one hidden layer (Table 4: 400)"""
    paper: bool = False
    """Table 4's network widths and batch: encoder 400, heads 400, batch 256 (overrides those three flags)"""
    eval_interval: int = 4000
    """env steps between evaluations"""
    n_test_rollouts: int = 100
    """deterministic evaluation episodes per evaluation"""
    save_model: bool = False
    """write actor, critic and args to runs/<run>/multi_reengage.pt after each evaluation and at the end"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint for --n-test-rollouts episodes instead of training"""
    torch_threads: int = 1
    """PyTorch CPU threads; 0 keeps PyTorch's default"""
    torch_deterministic: bool = True
    """use deterministic torch algorithms"""
    cuda: bool = False
    """train on the GPU if one is available"""


def mlp(in_dim, out_dim, hidden_dim, n_layers):
    layers = []
    for i in range(n_layers):
        layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden_dim, out_dim))


def pack(goals, n_max):
    """Flat goal tensors [B, n_max * 3] -> the active slots: gates b [N], positions xy [N, 2], their row seg [N] and
    slot index [N]. Padding slots (b = 0) are dropped: they add nothing to the b^2-gated sum."""
    G = goals.view(len(goals), n_max, 3)
    seg, slot = (G[..., 0] != 0).nonzero(as_tuple=True)
    return G[seg, slot, 0], G[seg, slot, 1:], seg, slot


class Critic(nn.Module):
    """Q(s, a, g) = HeadQ([h, z, a]) with h = (1/n_max) sum_i b_i^2 E([x_i, y_i, z]); E is the shared encoder."""

    def __init__(self, z_dim, act_dim, encoder_dim, embed_dim, head_dim, n_max, max_u):
        super().__init__()
        self.encoder = mlp(2 + z_dim, embed_dim, encoder_dim, 2)
        self.head = mlp(embed_dim + z_dim + act_dim, 1, head_dim, 1)
        self.n_max, self.max_u = n_max, max_u

    def embed(self, b, xy, seg, z, power=2):
        """h = (1/n_max) sum over the active slots of row seg of b^power E([xy, z]): DeepSets pooling."""
        e = self.encoder(torch.cat([xy, z[seg]], -1))
        pooled = torch.zeros(len(z), e.shape[-1], device=z.device, dtype=e.dtype)
        return pooled.index_add(0, seg, b.unsqueeze(-1) ** power * e) / self.n_max

    def q(self, h, z, a):
        return self.head(torch.cat([h, z, a / self.max_u], -1)).squeeze(-1)

    def forward(self, b, xy, seg, z, a):
        return self.q(self.embed(b, xy, seg, z), z, a)


class Actor(nn.Module):
    """pi(s, g) = max_u tanh(HeadPi([h_pi, z])); h_pi comes from the critic's encoder, without gradient."""

    def __init__(self, z_dim, act_dim, embed_dim, head_dim, max_u):
        super().__init__()
        self.head, self.max_u = mlp(embed_dim + z_dim, act_dim, head_dim, 1), max_u

    def forward(self, h, z):
        return self.max_u * torch.tanh(self.head(torch.cat([h.detach(), z], -1)))


class EpisodeBuffer:
    """Whole episodes: z[E, T+1] (= [achieved goal, observation]), ag[E, T+1], actions[E, T], and one goal set per
    episode (goals are fixed within an episode). sample() draws uniform transitions; there is no relabeling."""

    def __init__(self, capacity, T, z_dim, ag_dim, goal_dim, act_dim, env, rng):
        self.E, self.T, self.env, self.rng = max(capacity // T, 1), T, env, rng
        self.z = np.zeros((self.E, T + 1, z_dim), np.float32)
        self.ag = np.zeros((self.E, T + 1, ag_dim), np.float32)
        self.goals = np.zeros((self.E, goal_dim), np.float32)
        self.actions = np.zeros((self.E, T, act_dim), np.float32)
        self.ptr, self.size = 0, 0

    def store(self, z, ag, goals, actions):
        idx = (self.ptr + np.arange(len(goals))) % self.E
        self.z[idx], self.ag[idx], self.goals[idx], self.actions[idx] = z, ag, goals, actions
        self.ptr, self.size = (self.ptr + len(goals)) % self.E, min(self.size + len(goals), self.E)

    def sample(self, batch_size):
        e = self.rng.integers(0, self.size, batch_size)
        t = self.rng.integers(0, self.T, batch_size)
        goals = self.goals[e]
        # Eq. (13-14): the per-goal rewards R_item(s', g_i), from the env; r = their sum (goals are distinct cells)
        r_item = self.env.compute_reward_per_goal(self.ag[e, t + 1], goals).astype(np.float32)
        return self.z[e, t], self.actions[e, t], r_item.sum(-1), r_item, self.z[e, t + 1], goals


def critic_loss_fn(z, a, r, r_item, z2, goals, critic, actor_target, critic_target, gamma, alpha):
    """DDPG's value loss plus, for alpha > 0, the gate-gradient term (Eq. 19/40). goals are flat [B, n_max * 3] and
    r_item [B, n_max]. Returns the loss, the gradient-matching term and Q."""
    n_max = critic.n_max
    b, xy, seg, slot = pack(goals, n_max)  # s and s' share the goal set
    if alpha == 0:  # the DDPG baseline
        with torch.no_grad():
            h2 = critic_target.embed(b, xy, seg, z2)
            y = r + gamma * critic_target.q(h2, z2, actor_target(h2, z2))
        q = critic(b, xy, seg, z, a)
        return (q - y).pow(2).mean(), torch.zeros(()), q
    # target branch: y and its gradient w.r.t. the gates of s' (through Q' only: pi' reads h2 detached)
    b2 = b.detach().requires_grad_(True)
    h2 = critic_target.embed(b2, xy, seg, z2)  # b^2 gate; equal to pi''s b-pooled input for b in {0, 1}
    y = r + gamma * critic_target.q(h2, z2, actor_target(h2, z2))
    grad_y = torch.autograd.grad(y.sum(), b2)[0] + 2.0 * r_item[seg, slot]  # + dR/db_i = 2 b_i R_item = 2 R_item
    # current branch: dQ/db by double backpropagation, so the loss can train it
    b1 = b.detach().requires_grad_(True)
    q = critic(b1, xy, seg, z, a)
    grad_q = torch.autograd.grad(q.sum(), b1, create_graph=True)[0]
    # mean over B x n_max slots; padding slots have grad_q = grad_y = 0 exactly, so they only count in the divisor
    grad_match = (grad_q - grad_y).pow(2).sum() / (len(z) * n_max)
    return (q - y.detach()).pow(2).mean() + alpha * grad_match, grad_match, q


def update(batch, actor, critic, actor_target, critic_target, actor_opt, critic_opt, args, gamma):
    """One gradient step of critic and actor, then the Polyak step of both targets; returns the losses."""
    z, a, r, r_item, z2, goals = batch
    critic_loss, grad_match, q = critic_loss_fn(z, a, r, r_item, z2, goals, critic, actor_target, critic_target,
                                                gamma, args.alpha)
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
    with torch.no_grad():
        for net, target in ((actor, actor_target), (critic, critic_target)):
            for p, p_t in zip(net.parameters(), target.parameters()):
                p_t.lerp_(p, args.tau)  # p_t = (1 - tau) p_t + tau p
    return critic_loss.item(), actor_loss.item(), q.mean().item(), grad_match.item()


def policy(actor, critic, z, goals):
    """pi(s, g) from the critic's pooled embedding (gates b, no gradient)."""
    with torch.no_grad():
        b, xy, seg, _ = pack(goals, critic.n_max)
        h = critic.embed(b, xy, seg, z, power=1)
        return actor(h, z)


def rollout(vec_env, actor, critic, T, device, explore, args, rng, max_u, warmup=False):
    """One episode in each env (reset together, stepped in lockstep; these envs never end early)."""
    n = vec_env.num_envs
    ob, _ = vec_env.reset()
    z = np.zeros((n, T + 1, ob["achieved_goal"].shape[-1] + ob["observation"].shape[-1]), np.float32)
    ag = np.zeros((n, T + 1, ob["achieved_goal"].shape[-1]), np.float32)
    actions = np.zeros((n, T, vec_env.single_action_space.shape[0]), np.float32)
    goals, ret, success = ob["desired_goal"].copy(), np.zeros(n), np.zeros(n)
    z[:, 0], ag[:, 0] = np.concatenate([ob["achieved_goal"], ob["observation"]], -1), ob["achieved_goal"]
    for t in range(T):
        if warmup:
            a = rng.uniform(-max_u, max_u, actions[:, t].shape)
        else:
            a = policy(actor, critic, *[torch.as_tensor(x, device=device) for x in (z[:, t], goals)]).cpu().numpy()
            if explore:
                a = np.clip(a + args.noise_std * max_u * rng.standard_normal(a.shape), -max_u, max_u)
        ob, r, terminated, truncated, info = vec_env.step(a.astype(np.float32))
        actions[:, t], ag[:, t + 1] = a, ob["achieved_goal"]
        z[:, t + 1] = np.concatenate([ob["achieved_goal"], ob["observation"]], -1)
        ret += r
        success = np.maximum(success, info["is_success"])  # ever rewarded
    return z, ag, goals, actions, success, ret


def evaluate(vec_env, actor, critic, T, device, n_episodes, args, rng, max_u):
    """Deterministic policy; returns (success rate, average episode reward: the paper's metric)."""
    successes, returns = [], []
    while len(successes) < n_episodes:
        *_, success, ret = rollout(vec_env, actor, critic, T, device, False, args, rng, max_u)
        successes += list(success)
        returns += list(ret)
    return float(np.mean(successes[:n_episodes])), float(np.mean(returns[:n_episodes]))


def make_vec_env(args, n):
    return gym.vector.SyncVectorEnv([lambda: envs.make(args.env) for _ in range(n)])


def check_env(env, args):
    """One-line errors for envs and budgets this script cannot handle."""
    if not hasattr(env.unwrapped, "compute_reward_per_goal"):
        raise envs.EnvError(f"{args.env} has no per-goal reward (compute_reward_per_goal); Multi-ReenGAGE needs a "
                            f"goal-set env such as DriveSeek or NoisySeek")
    space = env.action_space
    if not isinstance(space, gym.spaces.Box) or not np.all(space.high == space.high[0]) or \
            not np.all(space.low == -space.high):
        raise envs.EnvError(f"{args.env}: DDPG here needs a symmetric continuous action box, got {space}")
    for name in ("total_timesteps", "num_envs", "batch_size", "buffer_size", "eval_interval", "n_test_rollouts",
                 "encoder_dim", "embed_dim", "head_dim"):
        if getattr(args, name) < 1:
            raise envs.EnvError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.alpha < 0 or not 0 <= args.tau <= 1 or args.learning_starts < 0:
        raise envs.EnvError("--alpha and --learning-starts must be >= 0 and --tau must lie in [0, 1]")


def make_nets(env, args):
    """Actor and critic for this env's z = [achieved goal, observation] and action sizes."""
    z_dim = sum(env.observation_space[k].shape[0] for k in ("achieved_goal", "observation"))
    act_dim, max_u = env.action_space.shape[0], float(env.action_space.high[0])
    n_max = env.unwrapped.n_max
    critic = Critic(z_dim, act_dim, args.encoder_dim, args.embed_dim, args.head_dim, n_max, max_u)
    return Actor(z_dim, act_dim, args.embed_dim, args.head_dim, max_u), critic


def save_checkpoint(path, actor, critic, args):
    torch.save({"actor": actor.state_dict(), "critic": critic.state_dict(), "args": asdict(args)}, path)


def load_and_evaluate(args):
    """Evaluate a saved actor (with the critic's encoder): success rate and average reward."""
    if not os.path.isfile(args.eval_checkpoint):
        raise envs.EnvError(f"no checkpoint at {args.eval_checkpoint}")
    ckpt = torch.load(args.eval_checkpoint, map_location="cpu", weights_only=False)
    saved = Args(**ckpt["args"])
    env = envs.make(saved.env)
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


def main(args):
    if args.eval_checkpoint:
        return load_and_evaluate(args)
    if args.paper:  # Table 4
        args.encoder_dim, args.head_dim, args.batch_size = 400, 400, 256
    # seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    rng = np.random.default_rng(args.seed)

    # envs: one in this process for the spaces and the per-goal reward, num_envs for collecting
    env = envs.make(args.env)
    check_env(env, args)
    if args.noise_std is None:
        args.noise_std = 0.05 if env.spec.id.startswith("DriveSeek") else 0.1  # Table 4
    T = envs.horizon(env)
    ag_dim, goal_dim = env.observation_space["achieved_goal"].shape[0], env.observation_space["desired_goal"].shape[0]
    act_dim, max_u = env.action_space.shape[0], float(env.action_space.high[0])
    vec_env = make_vec_env(args, args.num_envs)
    vec_env.reset(seed=args.seed)

    # networks, optimisers, buffer; the actor has no encoder of its own (it reads the critic's)
    actor, critic = [net.to(device) for net in make_nets(env, args)]
    actor_target, critic_target = [net.to(device) for net in make_nets(env, args)]
    for net, target in ((actor, actor_target), (critic, critic_target)):
        target.load_state_dict(net.state_dict())
        target.requires_grad_(False)  # never optimised; the gate gradient needs gradients w.r.t. b only
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.lr, fused=True)  # fused: faster small updates
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr, fused=True)
    z_dim = ag_dim + env.observation_space["observation"].shape[0]
    buffer = EpisodeBuffer(args.buffer_size, T, z_dim, ag_dim, goal_dim, act_dim, env.unwrapped, rng)

    run_name = f"{args.env.replace(':', '_')}__multi_reengage__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    ckpt_path = f"runs/{run_name}/multi_reengage.pt"

    global_step, grad_steps, epoch, start_time, ret_eval, losses = 0, 0, 0, time.time(), 0.0, None
    try:
        while global_step < args.total_timesteps:
            # collect one episode per env (uniform random actions during warm-up) and store it
            warmup = global_step < args.learning_starts
            z, ag, goals, actions, success, ret = rollout(vec_env, actor, critic, T, device, True, args, rng, max_u,
                                                          warmup)
            buffer.store(z, ag, goals, actions)
            steps = T * args.num_envs
            global_step += steps
            writer.add_scalar("charts/success_rate", success.mean(), global_step)
            writer.add_scalar("charts/episodic_return", ret.mean(), global_step)
            writer.add_scalar("stats/active_goals", float((goals[:, 0::3] != 0).sum(-1).mean()), global_step)

            # one gradient step per env step collected (Table 4: train every step), after the warm-up
            for _ in range(steps if global_step >= args.learning_starts else 0):
                batch = [torch.as_tensor(x, device=device) for x in buffer.sample(args.batch_size)]
                losses = update(batch, actor, critic, actor_target, critic_target, actor_opt, critic_opt, args,
                                args.gamma)
                grad_steps += 1
            if global_step // args.eval_interval == (global_step - steps) // args.eval_interval and \
                    global_step < args.total_timesteps:
                continue

            # every eval_interval env steps and at the end: log, evaluate the deterministic policy, checkpoint
            epoch += 1
            if losses is not None:
                writer.add_scalar("losses/critic_loss", losses[0], global_step)
                writer.add_scalar("losses/actor_loss", losses[1], global_step)
                writer.add_scalar("losses/q_values", losses[2], global_step)
                writer.add_scalar("losses/grad_match", losses[3], global_step)
            sr, ret_eval = evaluate(vec_env, actor, critic, T, device, args.n_test_rollouts, args, rng, max_u)
            elapsed = time.time() - start_time
            sps = int(global_step / elapsed)
            writer.add_scalar("eval/success_rate", sr, global_step)
            writer.add_scalar("eval/episodic_return", ret_eval, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("charts/gradient_steps", grad_steps, global_step)
            left = elapsed / global_step * max(args.total_timesteps - global_step, 0)
            print(f"epoch {epoch:>3} | step {global_step:>8}/{args.total_timesteps} | success {sr:.2f} | "
                  f"return {ret_eval:7.2f} | SPS {sps:>5} | {elapsed:5.0f}s elapsed, ~{left:.0f}s left", flush=True)
            if args.save_model:
                save_checkpoint(ckpt_path, actor, critic, args)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}")
    finally:
        vec_env.close()
        env.close()
        writer.close()
    if args.save_model:
        save_checkpoint(ckpt_path, actor, critic, args)
        print(f"checkpoint: {ckpt_path}\nevaluate it: python multi_reengage.py --eval-checkpoint {ckpt_path}")
    return ret_eval


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminated run saves like Ctrl-C does
    try:
        main(tyro.cli(Args))
    except envs.EnvError as e:
        sys.exit(f"error: {e}")
