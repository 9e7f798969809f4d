"""hem.py: the E-step sampler, the M-step loss for both policy families, Theorems 1-2 on the one-step bandit, the
hybrid's actor gradient; then the script as a user runs it."""

import copy
import math
import re
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
import her_ddpg
from conftest import (IndexGoalEnv, assert_one_line_error, final_success, indexed_episodes,
                      train_save_and_reload)
from hem import (Actor, CategoricalPolicy, Critic, EpisodeBuffer, GaussianPolicy, hem_loss, hybrid_update, rollout,
                 select_action)

T = 10


def indexed_buffer(n_episodes=50, seed=0, ep_len=None):
    """Episodes whose achieved goal at step t of episode e is (e, t), and whose desired goal is (-1, -1)."""
    buf = EpisodeBuffer(n_episodes * T, T, 2, 2, 1, IndexGoalEnv(), np.random.default_rng(seed))
    buf.store(*indexed_episodes(n_episodes, T, ep_len))
    return buf


def test_q_h_goals_all_come_from_later_steps_of_the_same_episode():
    lengths = np.random.default_rng(1).integers(1, T + 1, 50)  # some episodes ended early (success)
    o, _, r, _, g, _ = indexed_buffer(ep_len=lengths).sample(20_000, relabel_p=1.0)
    e, t = o[:, 0].astype(int), o[:, 1].astype(int)
    assert (g[:, 0] == e).all()  # every goal relabelled, from the same episode
    assert (t < lengths[e]).all() and (g[:, 1] > t).all() and (g[:, 1] <= lengths[e]).all()  # t < t' <= L
    assert set(np.unique(g[:, 1] - t)) == set(range(1, T + 1))  # uniform over the future: every gap occurs
    assert ((r == 0) == (g[:, 1] == t + 1)).all()  # the one-step reward is recomputed for g'


def test_hybrid_critic_batches_keep_original_goals_with_hers_probability():
    _, _, _, _, g, _ = indexed_buffer().sample(20_000, relabel_p=0.8)
    assert abs((g[:, 0] >= 0).mean() - 0.8) < 0.015


def test_m_step_loss_is_the_categorical_negative_log_likelihood():
    torch.manual_seed(0)
    policy = CategoricalPolicy(3, 2, 5, 16)
    x, a = torch.randn(6, 5), torch.tensor([[0.0], [3.0], [1.0], [4.0], [4.0], [2.0]])
    logits = policy(x)
    by_hand = -np.mean([logits[i, int(a[i])].item() - math.log(math.fsum(math.exp(v) for v in logits[i].tolist()))
                        for i in range(6)])
    assert hem_loss(policy, x, a).item() == pytest.approx(by_hand, rel=1e-5)


def test_m_step_loss_is_the_gaussian_negative_log_likelihood_with_a_global_std():
    torch.manual_seed(0)
    policy = GaussianPolicy(3, 2, 2, 16, max_u=1.0)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.5, 0.3]))
    x, a = torch.randn(6, 5), torch.rand(6, 2) * 2 - 1
    mu, sigma = policy(x).detach().numpy(), np.exp([-0.5, 0.3])
    log_pi = (-(a.numpy() - mu) ** 2 / (2 * sigma**2) - np.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert hem_loss(policy, x, a).item() == pytest.approx(-log_pi.mean(), rel=1e-5)
    hem_loss(policy, x, a).backward()
    assert policy.log_std.grad.abs().min() > 0  # the global std is learned by the same likelihood


class Bandit:
    """The one-step example of Sec. 2.2: k goals = k actions; reward 1[a = g]; the achieved goal is one-hot(a)."""

    def compute_reward(self, ag, g, info):
        return (ag == g).all(-1).astype(np.float32)

    def compute_terminated(self, ag, g, info):
        return True


def relative_errors(k, n, rng):
    """Per-sample relative error sqrt(MSE)/E of REINFORCE and of the hindsight estimate of d J / d theta_{0,0} for the
    uniform tabular policy pi(b | g) = 1/k; its score is d log pi(b | g) / d theta_{0,0} = 1[g = 0](1[b = 0] - 1/k)."""
    g, b = rng.integers(0, k, n), rng.integers(0, k, n)  # on-policy episodes: g ~ p(g), b ~ pi(. | g)
    score = lambda goal, action: (goal == 0) * ((action == 0) - 1 / k)  # noqa: E731
    reinforce = (b == g) * score(g, b)  # Thm 1: r(b, g) grad log pi(b | g)
    eye = np.eye(k, dtype=np.float32)
    buf = EpisodeBuffer(n, 1, 1, k, 1, Bandit(), rng)
    buf.store(np.zeros((n, 2, 1)), np.stack([np.zeros((n, k)), eye[b]], 1), eye[g][:, None], b[:, None, None],
              np.ones(n, int))
    _, a_h, r_h, _, g_h, _ = buf.sample(n, relabel_p=1.0)  # the E-step: q_h relabels each episode with its outcome
    hindsight = r_h * score(g_h.argmax(-1), a_h[:, 0]) / k  # Thm 2: r(s, b, g') grad log pi(b | s, g') / k
    exact = (1 - 1 / k) / k**2  # both are unbiased for delta/k^2 - 1/k^3
    return [np.sqrt(np.mean((est - exact) ** 2)) / exact for est in (reinforce, hindsight)]


def test_theorems_1_2_reinforce_error_grows_like_k_hindsight_like_sqrt_k():
    rng = np.random.default_rng(0)
    ks = np.array([4, 8, 16, 32, 64])
    errors = np.array([relative_errors(k, 400_000, rng) for k in ks])
    slope_reinforce, slope_hindsight = [np.polyfit(np.log(ks), np.log(errors[:, i]), 1)[0] for i in (0, 1)]
    assert 0.85 < slope_reinforce < 1.15, errors
    assert 0.4 < slope_hindsight < 0.6, errors


def test_hybrid_with_eta_0_is_ddpg_her_and_eta_adds_eta_times_the_likelihood_gradient():
    torch.manual_seed(0)
    actor, critic = Actor(3, 2, 2, 16, 1.0), Critic(3, 2, 2, 16, 1.0)
    x, a, r = torch.randn(8, 5), torch.rand(8, 2) * 2 - 1, -torch.ones(8)
    x2, d, x_h, a_h = torch.randn(8, 5), torch.zeros(8), torch.randn(8, 5), torch.rand(8, 2) * 2 - 1

    def step(update, eta, *extra):
        nets = [copy.deepcopy(n) for n in (actor, critic, actor, critic)]
        opts = [torch.optim.SGD(nets[i].parameters(), lr=1.0) for i in (0, 1)]  # lr 1: the change is -gradient
        update((x, a, r, x2, d), *extra, *nets, *opts, SimpleNamespace(action_l2=1.0, eta=eta), 0.98)
        return torch.cat([p.detach().flatten() for p in nets[0].parameters()])

    ddpg = step(her_ddpg.ddpg_update, 0.0)
    assert torch.allclose(step(hybrid_update, 0.0, (x_h, a_h)), ddpg)
    bc = (a_h - actor(x_h)).pow(2).sum(-1).mean()
    grad_bc = torch.cat([g.flatten() for g in torch.autograd.grad(bc, list(actor.parameters()))])
    assert torch.allclose(step(hybrid_update, 0.5, (x_h, a_h)) - ddpg, -0.5 * grad_bc, atol=1e-6)


def test_the_cloned_action_is_the_executed_one_after_noise_and_clipping():
    """Navigation moves by 0.2 x action, so the stored actions must explain every stored transition."""
    vec_env = gym.vector.SyncVectorEnv([lambda: envs.make("Navigation:k=2") for _ in range(3)])
    vec_env.reset(seed=0)
    policy, norm = GaussianPolicy(2, 2, 2, 16, 1.0), lambda v: v.astype(np.float32)
    args = SimpleNamespace(eta=0.0, sigma_a=0.5)
    obs, _, _, actions, ep_len, _, _ = rollout(vec_env, policy, norm, norm, 50, "cpu", True, args,
                                               np.random.default_rng(0), 1.0)
    for i in range(3):
        n = ep_len[i]
        np.testing.assert_allclose(obs[i, 1:n + 1], np.clip(obs[i, :n] + 0.2 * actions[i, :n], -1, 1), atol=1e-5)
    assert np.abs(actions).max() <= 1.0 and (np.abs(actions) == 1.0).any()  # clipped to the box (sigma_a = 0.5)


def test_discrete_exploration_samples_pi_then_eps_uniform():
    policy = CategoricalPolicy(1, 1, 4, 8)
    with torch.no_grad():
        policy.net[-1].weight.zero_()
        policy.net[-1].bias.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])))
    x, rng = torch.zeros(40_000, 2), np.random.default_rng(0)
    counts = lambda a: np.bincount(a, minlength=4) / len(a)  # noqa: E731
    np.testing.assert_allclose(counts(select_action(policy, x, True, SimpleNamespace(eps=0.0), rng, 1)),
                               [0.1, 0.2, 0.3, 0.4], atol=0.01)
    np.testing.assert_allclose(counts(select_action(policy, x, True, SimpleNamespace(eps=1.0), rng, 1)), 0.25,
                               atol=0.01)
    assert (select_action(policy, x[:5], False, None, rng, 1) == 3).all()  # greedy: argmax


# -- the script ----------------------------------------------------------------------------------------------------

TINY = ["--total-timesteps", "200", "--n-episodes", "2", "--n-batches", "3", "--hidden-dim", "16",
        "--batch-size", "16", "--eval-interval", "100", "--n-test-rollouts", "2"]


def test_help_is_the_manual(run):
    out = run("hem.py", "--help")
    assert out.returncode == 0 and "--eta" in out.stdout and "--n-episodes" in out.stdout


@pytest.mark.parametrize("env,extra", [("FetchReach", []), ("BitFlip", []), ("Point2D", ["--eta", "0.1"]),
                                       ("FourRoomMaze", ["--on-policy"])])
def test_smoke_train_save_and_reload(run, tmp_path, env, extra):
    _, ckpt = train_save_and_reload(run, tmp_path, ["hem.py"], env, *TINY, *extra, n_test=4)
    assert torch.load(ckpt, weights_only=False)["o_norm"]["count"] > 0


@pytest.mark.parametrize("env", ["ContinuousSeek:d=5", "Navigation:k=5", "Point2DFourRoom", "FetchPush"])
def test_smoke_runs_on_other_goal_envs(run, env):
    out = run("hem.py", "--env", env, *TINY)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("args,message", [(["--env", "BitFlip", "--eta", "0.1"], "needs a Box"),
                                          (["--env", "Pendulum-v1"], "not goal-conditioned"),
                                          (["--env", "DriveSeek"], "cannot be relabelled"),
                                          (["--n-episodes", "0"], "must be positive"),
                                          (["--eps", "1.5"], "[0, 1]"),
                                          (["--eta", "0.1", "--on-policy"], "--on-policy"),
                                          (["--eval-checkpoint", "missing.pt"], "no checkpoint")])
def test_bad_input_gets_a_one_line_error(run, args, message):
    assert_one_line_error(run("hem.py", *args), message)


def test_learns_bitflip_and_the_m_step_is_what_makes_it_learn(run):
    """BitFlip n = 8, 4k env steps: hEM >= 0.8 greedy success over 50 episodes; with no M-step (U = 0) the same
    budget stays at the untrained policy's level."""
    args = ["--env", "BitFlip:n=8", "--n-episodes", "20", "--n-batches", "50", "--batch-size", "128",
            "--total-timesteps", "4000", "--eval-interval", "2000", "--n-test-rollouts", "50", "--seed", "1"]
    hem, untrained = run("hem.py", *args), run("hem.py", *args, "--n-batches", "0")
    assert final_success(hem.stdout) >= 0.8, hem.stdout
    assert final_success(untrained.stdout) <= 0.2, untrained.stdout


def test_learns_continuous_navigation(run):
    """Navigation k = 2 (Gaussian policy), 4k env steps: >= 0.8 greedy success over 50 episodes."""
    out = run("hem.py", "--env", "Navigation:k=2", "--n-episodes", "20", "--n-batches", "50", "--total-timesteps",
              "4000", "--eval-interval", "2000", "--n-test-rollouts", "50", "--seed", "1")
    assert final_success(out.stdout) >= 0.8, out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_default_fetch_reach_demo_reaches_0_9_within_5k_steps(run, seed):
    out = run("hem.py", "--env", "FetchReach", "--seed", str(seed), timeout=600)
    assert out.returncode == 0, out.stderr
    assert max(map(float, re.findall(r"success (\d\.\d+)", out.stdout))) >= 0.9, out.stdout
