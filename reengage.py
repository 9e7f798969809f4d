"""ReenGAGE: goal-conditioned Q-learning as knowledge distillation (Levine & Feizi, AAAI 2023), on DDPG + HER.

Idea: the Bellman equation holds for the gradient of Q with respect to the goal too (Eq. 7), because the
expectation over s' does not depend on g. So besides matching the target's value, the critic can be trained to
match the target's goal-gradient: one Q-value carries d numbers of supervision about nearby goals, which helps
most when the goal space is high-dimensional. This file is her_ddpg.py plus that term; alpha = 0 is DDPG + HER.

Equations implemented (each marked in the code):
  value target:   y = clip(r + gamma Q'(s', pi'(s', g), g), -1/(1 - gamma), 0)              (Eq. 4, as her_ddpg.py)
  target grad:    G_y = dy/dg, the total derivative: through Q''s goal input AND through pi'(s', g)
  current grad:   G_Q = dQ(s, a, g)/dg by double backpropagation
  critic loss:    mean (Q - y)^2 + alpha mean_{batch, goal dims} 1[r = -1] (G_Q - G_y)^2       (Eq. 9, sparse)
  actor loss:     as DDPG + HER (no gradient term)
  --sac (appendix): y = r + gamma (min_j Q'_j(s', a~) - ent_coef log pi(a~ | s', g)), a~ reparameterised from the
                  current actor; G_y flows through a~ and log pi too; loss 0.5 sum_j [MSE_j + alpha grad_match_j]
alpha is the authors' code value: the mean runs over the goal dimensions too, so the paper's "alpha = 0.2/d" is
--alpha 0.2 here (../shared/specs/reengage.md §0). Goals are differentiated before the running normaliser, as the
authors' HandReach code does; the gradient is 0 where the target clip or the normaliser clip is active.

Two regimes, chosen by subcommand, each the paper's own:
  seek       ContinuousSeek (Table 1; SB3 DDPG): 2 x 256 nets, gamma 0.95, noise 0.03, no random actions, no action
             penalty, no input normalisation, 1000 random warm-up steps, one gradient step per env step (10 after
             each 10-step episode), Polyak 0.995 per step (0.951 once per 10-step cycle). Default: d = 10, lr 1e-3,
             batch 512, alpha 0.2.
  baselines  HandReach, Fetch: the baselines HER defaults of her_ddpg.py; alpha 2e-5 (the paper's best HandReach value).
Deviations from the paper: updates run after each episode rather than between its steps (same count); the seek
regime keeps the HER recipe's target clip (it rarely binds at gamma 0.95; SB3 has none); the critic input is
[s, g], not SB3's [s, g, s].

Usage:
  python reengage.py                                              # ContinuousSeek d=10, alpha 0.2, 20k steps
  python reengage.py seek --env ContinuousSeek:d=10 --alpha 0     # the DDPG + HER baseline, same regime
  python reengage.py baselines --env HandReach --total-timesteps 500000 --n-cycles 50
  python reengage.py baselines --eval-checkpoint runs/<run>/reengage.pt
"""

import math
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
    alpha: float = 2e-5
    """ReenGAGE weight of mean_{batch, goal dims} 1[r = -1] (grad_g Q - grad_g y)^2; 0 gives DDPG + HER"""
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
    learning_starts: int = 0
    """uniformly random actions and no updates for the first env steps (SB3's learning_starts)"""
    hidden_dim: int = 256
    """units per hidden layer (ReLU)"""
    n_layers: int = 3
    """hidden layers of actor and critic"""
    sac: bool = False
    """the appendix's SAC variant: squashed-Gaussian actor, twin critics, learned entropy coefficient, no target
    actor; the target gradient flows through the reparameterised next action and the entropy term"""
    clip_obs: float = 200.0
    """observations and goals are clipped to +-clip_obs before normalising"""
    normalize: bool = True
    """running mean/std normalisation of observations and goals (the HER recipe); the seek regime turns it off, as
    in the paper's SB3 runs"""
    clip_range: float = 5.0
    """normalised inputs are clipped to +-clip_range"""
    norm_eps: float = 0.01
    """lower bound of the normaliser's std"""
    n_test_rollouts: int = 10
    """deterministic evaluation episodes per epoch"""
    save_model: bool = False
    """write actor, normalisers and args to runs/<run>/reengage.pt after each evaluation and at the end"""
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


# The paper's two regimes, as subcommands; every field stays overridable on the command line.
PRESETS = {
    # ContinuousSeek (Table 1, SB3 DDPG), d = 10 with the Table 2 setting where ReenGAGE wins (lr 1e-3, batch 512)
    "seek": Args(env="ContinuousSeek:d=10", alpha=0.2, total_timesteps=20_000, num_envs=1, n_cycles=200, n_batches=10,
                 batch_size=512, gamma=0.95, polyak=0.995**10, noise_eps=0.03, random_eps=0.0, action_l2=0.0,
                 learning_starts=1000, n_layers=2, n_test_rollouts=50, normalize=False),
    # HandReach and Fetch: the baselines HER defaults (her_ddpg.py), alpha 2e-5 (the paper's HandReach sweep)
    "baselines": Args(),
}
DESCRIPTIONS = {"seek": "the paper's ContinuousSeek regime (one gradient step per env step)",
                "baselines": "the baselines HER regime (HandReach, Fetch)"}


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

    def torch(self, x):
        """The same map on a tensor, differentiable, so goal gradients are taken w.r.t. the env's raw goal."""
        mean, std = torch.as_tensor(self.mean, device=x.device), torch.as_tensor(self.std, device=x.device)
        return ((x.clamp(-self.clip_obs, self.clip_obs) - mean) / std).clamp(-self.clip_range, self.clip_range)


def mlp(in_dim, out_dim, hidden_dim, n_layers):
    layers = []
    for i in range(n_layers):
        layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden_dim, out_dim))


class Actor(nn.Module):
    """pi(s, g) = max_u tanh(MLP([o_norm, g_norm]))."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dim, n_layers, max_u):
        super().__init__()
        self.net, self.max_u = mlp(obs_dim + goal_dim, act_dim, hidden_dim, n_layers), max_u

    def forward(self, x):
        return self.max_u * torch.tanh(self.net(x))


class Critic(nn.Module):
    """Q(s, a, g) = MLP([o_norm, g_norm, a / max_u])."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dim, n_layers, max_u):
        super().__init__()
        self.net, self.max_u = mlp(obs_dim + goal_dim + act_dim, 1, hidden_dim, n_layers), max_u

    def forward(self, x, a):
        return self.net(torch.cat([x, a / self.max_u], -1)).squeeze(-1)


class GaussianActor(nn.Module):
    """SAC's squashed Gaussian pi(a | s, g): a = max_u tanh(mu + sigma eps); forward() is the deterministic action."""

    def __init__(self, obs_dim, goal_dim, act_dim, hidden_dim, n_layers, max_u):
        super().__init__()
        self.net, self.max_u = mlp(obs_dim + goal_dim, 2 * act_dim, hidden_dim, n_layers), max_u

    def forward(self, x):
        return self.max_u * torch.tanh(self.net(x).chunk(2, -1)[0])

    def sample(self, x):
        """Reparameterised sample and its log-probability (tanh-corrected), differentiable in x."""
        mu, log_std = self.net(x).chunk(2, -1)
        log_std = log_std.clamp(-20, 2)
        eps = torch.randn_like(mu)
        u = mu + log_std.exp() * eps
        log_prob = (-0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)  # log(1 - tanh(u)^2)
        return self.max_u * torch.tanh(u), log_prob


class TwinCritic(nn.Module):
    """SAC's two critics; forward() returns both Q-values stacked, shape [2, batch]."""

    def __init__(self, *dims):
        super().__init__()
        self.q1, self.q2 = Critic(*dims), Critic(*dims)

    def forward(self, x, a):
        return torch.stack([self.q1(x, a), self.q2(x, a)])


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


def critic_loss_fn(o, a, r, o2, g, d, critic, actor_target, critic_target, g_norm, gamma, alpha):
    """Eq. (4) value loss plus, for alpha > 0, the ReenGAGE goal-gradient term of Eq. (9).

    o, o2 are normalised; g is the raw goal, so both gradients are taken w.r.t. the env's goal. Returns the loss, the
    gradient-matching term and Q."""
    if alpha == 0:  # DDPG + HER: exactly her_ddpg.py's critic loss
        with torch.no_grad():
            x2 = torch.cat([o2, g_norm.torch(g)], -1)
            y = td_target(r, d, critic_target(x2, actor_target(x2)), gamma)
        q = critic(torch.cat([o, g_norm.torch(g)], -1), a)
        return (q - y).pow(2).mean(), torch.zeros(()), q
    # target branch: y and its total derivative w.r.t. g, through Q''s goal input AND through pi'(s', g)
    g2 = g.detach().requires_grad_(True)
    x2 = torch.cat([o2, g_norm.torch(g2)], -1)
    y = td_target(r, d, critic_target(x2, actor_target(x2)), gamma)
    grad_y = torch.autograd.grad(y.sum(), g2)[0]  # = gamma dQ'/dg (r is a constant where the term applies)
    # current branch: grad_g Q by double backpropagation, so the loss can train it
    g1 = g.detach().requires_grad_(True)
    q = critic(torch.cat([o, g_norm.torch(g1)], -1), a)
    grad_q = torch.autograd.grad(q.sum(), g1, create_graph=True)[0]
    mask = (r == -1).float().unsqueeze(-1)  # Eq. (9): only where r = -1; grad_g R is undefined where r = 0
    grad_match = (mask * (grad_q - grad_y) ** 2).mean()  # mean over batch AND goal dims (the code's alpha)
    return (q - y.detach()).pow(2).mean() + alpha * grad_match, grad_match, q


def sac_critic_loss_fn(o, a, r, o2, g, d, critic, critic_target, actor, ent_coef, g_norm, gamma, alpha):
    """The SAC variant: y = r + gamma (min_j Q'_j(s', a~) - ent_coef log pi(a~ | s', g)), a~ ~ pi(s', g) by
    reparameterisation (no target actor, no clip: the entropy bonus can make returns positive). G_y flows through
    the critics' goal input, a~ and log pi. Loss = 0.5 sum_j [MSE_j + alpha grad_match_j]."""
    g2 = g.detach().requires_grad_(alpha > 0)
    with torch.set_grad_enabled(alpha > 0):
        x2 = torch.cat([o2, g_norm.torch(g2)], -1)
        a2, log_prob2 = actor.sample(x2)
        y = r + gamma * (1 - d) * (critic_target(x2, a2).min(0).values - ent_coef * log_prob2)
        grad_y = torch.autograd.grad(y.sum(), g2)[0] if alpha > 0 else None
    mask = (r == -1).float().unsqueeze(-1)  # Eq. (9): only where r = -1
    loss, grad_match, qs = 0.0, torch.zeros(()), []
    for q_net in (critic.q1, critic.q2):  # each critic matches the target gradient with its own gradient
        g1 = g.detach().requires_grad_(alpha > 0)
        q = q_net(torch.cat([o, g_norm.torch(g1)], -1), a)
        loss = loss + 0.5 * (q - y.detach()).pow(2).mean()
        if alpha > 0:
            grad_q = torch.autograd.grad(q.sum(), g1, create_graph=True)[0]
            match = (mask * (grad_q - grad_y) ** 2).mean()
            loss, grad_match = loss + 0.5 * alpha * match, grad_match + 0.5 * match.detach()
        qs.append(q)
    return loss, grad_match, torch.stack(qs)


def sac_update(batch, actor, critic, critic_target, log_ent_coef, actor_opt, critic_opt, ent_opt, g_norm, args,
               gamma):
    """One SAC step: critics (with the ReenGAGE term), actor, then the entropy coefficient (target -dim(A))."""
    o, a, r, o2, g, d = batch
    ent_coef = log_ent_coef.exp().detach()
    critic_loss, grad_match, q = sac_critic_loss_fn(o, a, r, o2, g, d, critic, critic_target, actor, ent_coef,
                                                    g_norm, gamma, args.alpha)
    critic_opt.zero_grad()
    critic_loss.backward()
    critic_opt.step()

    x = torch.cat([o, g_norm.torch(g)], -1)
    pi, log_prob = actor.sample(x)
    critic.requires_grad_(False)
    actor_loss = (ent_coef * log_prob - critic(x, pi).min(0).values).mean()  # SAC: maximise min Q + entropy
    critic.requires_grad_(True)
    actor_opt.zero_grad()
    actor_loss.backward()
    actor_opt.step()
    ent_loss = -(log_ent_coef * (log_prob.detach() - a.shape[-1])).mean()  # target entropy -dim(A)
    ent_opt.zero_grad()
    ent_loss.backward()
    ent_opt.step()
    return critic_loss.item(), actor_loss.item(), q.mean().item(), grad_match.item(), (r == -1).float().mean().item()


def ddpg_update(batch, actor, critic, actor_target, critic_target, actor_opt, critic_opt, g_norm, args, gamma):
    """One gradient step of critic and actor on a relabelled batch; returns the losses."""
    o, a, r, o2, g, d = batch
    critic_loss, grad_match, q = critic_loss_fn(o, a, r, o2, g, d, critic, actor_target, critic_target, g_norm,
                                                gamma, args.alpha)
    critic_opt.zero_grad()
    critic_loss.backward()
    critic_opt.step()

    x = torch.cat([o, g_norm.torch(g)], -1)
    pi = actor(x)
    critic.requires_grad_(False)  # the actor loss only needs dQ/da, not the critic's weight gradients
    actor_loss = -critic(x, pi).mean() + args.action_l2 * (pi / actor.max_u).pow(2).mean()  # DDPG + action L2
    critic.requires_grad_(True)
    actor_opt.zero_grad()
    actor_loss.backward()
    actor_opt.step()
    return critic_loss.item(), actor_loss.item(), q.mean().item(), grad_match.item(), (r == -1).float().mean().item()


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
        x = np.concatenate([o_norm(ob["observation"]), g_norm(ob["desired_goal"])], -1)
        with torch.no_grad():
            x = torch.as_tensor(x, device=device)
            a = (actor.sample(x)[0] if explore and args.sac else actor(x)).cpu().numpy()
        if explore:  # Gaussian noise, then with probability random_eps (1 in warm-up) a uniformly random action
            a = np.clip(a + args.noise_eps * max_u * rng.standard_normal(a.shape), -max_u, max_u)
            random_a = rng.uniform(-max_u, max_u, a.shape)
            a = np.where(rng.random((n, 1)) < (1.0 if warmup else args.random_eps), random_a, a).astype(np.float32)
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
    actor = (GaussianActor if saved.sac else Actor)(*dims, env.action_space.shape[0], saved.hidden_dim, saved.n_layers,
                                                    max_u)
    actor.load_state_dict(ckpt["actor"])
    clip_range = saved.clip_range if saved.normalize else np.inf
    o_norm = Normalizer(dims[0], saved.norm_eps, saved.clip_obs, clip_range)
    g_norm = Normalizer(dims[1], saved.norm_eps, saved.clip_obs, clip_range)
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
    dims = (obs_dim, goal_dim, act_dim, args.hidden_dim, args.n_layers, max_u)
    if args.sac:  # appendix variant: squashed-Gaussian actor, twin critics, no target actor
        actor, critic, critic_target = GaussianActor(*dims).to(device), TwinCritic(*dims).to(device), TwinCritic(*dims)
        log_ent_coef = torch.zeros(1, device=device, requires_grad=True)  # entropy coefficient starts at 1
        ent_opt = torch.optim.Adam([log_ent_coef], lr=args.lr_actor)
        targets = [(critic, critic_target.to(device))]
    else:
        actor, critic = Actor(*dims).to(device), Critic(*dims).to(device)
        actor_target, critic_target = Actor(*dims).to(device), Critic(*dims).to(device)
        targets = [(actor, actor_target), (critic, critic_target)]
    for net, target in targets:
        target.load_state_dict(net.state_dict())
        target.requires_grad_(False)  # never optimised; grad_g y needs gradients w.r.t. g only
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.lr_actor, fused=True)  # fused: ~30% faster updates
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr_critic, fused=True)
    clip_range = args.clip_range if args.normalize else np.inf  # without normalising: mean 0, std 1, no clip
    o_norm = Normalizer(obs_dim, args.norm_eps, args.clip_obs, clip_range)
    g_norm = Normalizer(goal_dim, args.norm_eps, args.clip_obs, clip_range)
    buffer = EpisodeBuffer(args.buffer_size, T, obs_dim, goal_dim, act_dim, env.unwrapped, args.replay_strategy,
                           args.replay_k, rng)

    run_name = f"{args.env.replace(':', '_')}__reengage__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    ckpt_path = f"runs/{run_name}/reengage.pt"

    def to_tensor(*arrays):
        return [torch.as_tensor(a, device=device) for a in arrays]

    global_step, grad_steps, cycle, start_time, sr = 0, 0, 0, time.time(), 0.0
    try:
        while global_step < args.total_timesteps:
            # collect one episode per env with exploration, store it, update the normalisers
            obs, ag, g, actions, ep_len, success, ret = rollout(vec_env, actor, o_norm, g_norm, T, device, True, args,
                                                                rng, max_u, warmup=global_step < args.learning_starts)
            new = buffer.store(obs, ag, g, actions, ep_len)
            global_step += int(ep_len.sum())
            # normaliser statistics come from relabelled samples of the new episodes (goal stats see g')
            o_s, _, _, _, g_s, _ = buffer.sample(int(ep_len.sum()), episodes=new)
            if args.normalize:
                o_norm.update(o_s)
                g_norm.update(g_s)
            writer.add_scalar("charts/success_rate", success.mean(), global_step)
            writer.add_scalar("charts/episodic_return", ret.mean(), global_step)

            # a burst of updates on relabelled batches, then one Polyak update of both targets
            for _ in range(args.n_batches if global_step >= args.learning_starts else 0):
                o, a, r, o2, g_b, d = buffer.sample(args.batch_size)  # goals stay raw: normalised inside the loss
                batch = to_tensor(o_norm(o), a, r, o_norm(o2), g_b, d)
                if args.sac:
                    losses = sac_update(batch, actor, critic, critic_target, log_ent_coef, actor_opt, critic_opt,
                                        ent_opt, g_norm, args, gamma)
                else:
                    losses = ddpg_update(batch, actor, critic, actor_target, critic_target, actor_opt, critic_opt,
                                         g_norm, args, gamma)
                grad_steps += 1
            with torch.no_grad():
                for net, target in targets:
                    for p, p_t in zip(net.parameters(), target.parameters()):
                        p_t.lerp_(p, 1 - args.polyak)  # p_t = polyak p_t + (1 - polyak) p
            cycle += 1
            if cycle % args.n_cycles and global_step < args.total_timesteps:
                continue

            # end of an epoch (n_cycles cycles) or of training: log, evaluate the deterministic policy, checkpoint
            epoch = -(-cycle // args.n_cycles)
            if global_step >= args.learning_starts and args.n_batches > 0:
                writer.add_scalar("losses/critic_loss", losses[0], global_step)
                writer.add_scalar("losses/actor_loss", losses[1], global_step)
                writer.add_scalar("losses/q_values", losses[2], global_step)
                writer.add_scalar("losses/grad_match", losses[3], global_step)
                writer.add_scalar("stats/masked_fraction", losses[4], global_step)  # rows with r = -1
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
        print(f"checkpoint: {ckpt_path}\nevaluate it: python reengage.py baselines --eval-checkpoint {ckpt_path}")
    return sr


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminated run saves like Ctrl-C does
    try:
        main(tyro.cli(tyro.extras.subcommand_type_from_defaults(PRESETS, DESCRIPTIONS), default=PRESETS["seek"]))
    except envs.EnvError as e:
        sys.exit(f"error: {e}")
