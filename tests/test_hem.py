"""hem.py: the E-step sampler, the M-step loss for both policy families, Theorems 1-2 on the one-step bandit, the
exploration and its defaults, the seed streams; hem_hybrid.py (Sec. 4.4): its actor gradient and target; then both
scripts as a user runs them."""

import copy
import glob
import math
import os
import pickle
import re
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro

import envs
import hem
import hem_hybrid
import her_ddpg
from conftest import IndexGoalEnv, assert_one_line_error, eval_lines, final_success, indexed_episodes
from hem import (Args, CategoricalPolicy, EpisodeBuffer, GaussianPolicy, check_env, fill_defaults, hem_loss,
                 inverse_cdf, load_checkpoint, rollout, seed_everything, select_action, update)
from hem_hybrid import Actor, Critic, td_target

T = 10


def indexed_buffer(n_episodes=50, seed=0, ep_len=None, buffer_class=EpisodeBuffer):
    """Episodes whose achieved goal at step t of episode e is (e, t), and whose desired goal is (-1, -1)."""
    buf = buffer_class(n_episodes * T, T, 2, 2, 1, IndexGoalEnv(), np.random.default_rng(seed))
    buf.store(*indexed_episodes(n_episodes, T, ep_len))
    return buf


def test_q_h_goals_all_come_from_later_steps_of_the_same_episode():
    lengths = np.random.default_rng(1).integers(1, T + 1, 50)  # some episodes ended early (success)
    batch = indexed_buffer(ep_len=lengths).sample(20_000)
    o, r, g = batch.obs, batch.rewards, batch.g
    e, t = o[:, 0].astype(int), o[:, 1].astype(int)
    assert (g[:, 0] == e).all()  # every goal relabelled, from the same episode
    assert (t < lengths[e]).all() and (g[:, 1] > t).all() and (g[:, 1] <= lengths[e]).all()  # t < t' <= L
    assert set(np.unique(g[:, 1] - t)) == set(range(1, T + 1))  # uniform over the future: every gap occurs
    assert ((r == 0) == (g[:, 1] == t + 1)).all()  # the one-step reward is recomputed for g'


def test_hybrid_critic_batches_keep_original_goals_with_hers_probability():
    g = indexed_buffer(buffer_class=hem_hybrid.EpisodeBuffer).sample(20_000, relabel_p=0.8).g
    assert abs((g[:, 0] >= 0).mean() - 0.8) < 0.015


def test_m_step_loss_is_the_categorical_negative_log_likelihood():
    torch.manual_seed(0)
    policy = CategoricalPolicy(3, 2, 5, [16])
    x, a = torch.randn(6, 5), torch.tensor([[0.0], [3.0], [1.0], [4.0], [4.0], [2.0]])
    logits = policy.net(x)
    by_hand = -np.mean([logits[i, int(a[i])].item() - math.log(math.fsum(math.exp(v) for v in logits[i].tolist()))
                        for i in range(6)])
    assert hem_loss(policy, x, a).item() == pytest.approx(by_hand, rel=1e-5)


def test_m_step_loss_is_the_gaussian_negative_log_likelihood_with_a_global_std():
    torch.manual_seed(0)
    policy = GaussianPolicy(3, 2, 2, [16], max_u=1.0)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.5, 0.3]))
    x, a = torch.randn(6, 5), torch.rand(6, 2) * 2 - 1
    mu, sigma = policy(x).detach().numpy(), np.exp([-0.5, 0.3])
    log_pi = (-(a.numpy() - mu) ** 2 / (2 * sigma**2) - np.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert hem_loss(policy, x, a).item() == pytest.approx(-log_pi.mean(), rel=1e-5)
    hem_loss(policy, x, a).backward()
    assert policy.log_std.grad.abs().min() > 0  # the global std is learned by the same likelihood


def test_hem_update_is_one_optimiser_step_on_the_m_step_loss_alone():
    torch.manual_seed(0)
    policy, x, a = GaussianPolicy(3, 2, 2, [16], 1.0), torch.randn(8, 5), torch.rand(8, 2) * 2 - 1
    expected = copy.deepcopy(policy)
    grads = torch.autograd.grad(hem_loss(expected, x, a), list(expected.parameters()))
    losses = update((x, a), policy, torch.optim.SGD(policy.parameters(), lr=0.1))
    assert set(losses) == {"nll"}
    for p, p0, grad in zip(policy.parameters(), expected.parameters(), grads):
        torch.testing.assert_close(p.detach(), p0.detach() - 0.1 * grad)


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
    h = buf.sample(n)  # the E-step: q_h relabels each episode with its outcome
    hindsight = h.rewards * score(h.g.argmax(-1), h.actions[:, 0]) / k  # Thm 2: r(s, b, g') grad log pi(b | s, g') / k
    exact = (1 - 1 / k) / k**2  # both are unbiased for delta/k^2 - 1/k^3
    return [np.sqrt(np.mean((est - exact) ** 2)) / exact for est in (reinforce, hindsight)]


def test_theorems_1_2_reinforce_error_grows_like_k_hindsight_like_sqrt_k():
    rng = np.random.default_rng(0)
    ks = np.array([4, 8, 16, 32, 64])
    errors = np.array([relative_errors(k, 400_000, rng) for k in ks])
    slope_reinforce, slope_hindsight = [np.polyfit(np.log(ks), np.log(errors[:, i]), 1)[0] for i in (0, 1)]
    assert 0.85 < slope_reinforce < 1.15, errors
    assert 0.4 < slope_hindsight < 0.6, errors


def test_hybrid_with_eta_0_is_her_ddpg_and_eta_adds_eta_times_the_likelihood_gradient():
    torch.manual_seed(0)
    actor, critic = Actor(3, 2, 2, [16], 1.0), Critic(3, 2, 2, [16], 1.0)
    x, a, r = torch.randn(8, 5), torch.rand(8, 2) * 2 - 1, -torch.ones(8)
    x2, d, x_h, a_h = torch.randn(8, 5), torch.zeros(8), torch.randn(8, 5), torch.rand(8, 2) * 2 - 1

    def step(eta, hybrid=True):
        nets = [copy.deepcopy(n) for n in (actor, critic, actor, critic)]
        opts = [torch.optim.SGD(nets[i].parameters(), lr=1.0) for i in (0, 1)]  # lr 1: the change is -gradient
        args, batch = SimpleNamespace(action_l2=1.0, eta=eta), (x, a, r, x2, d)
        if hybrid:  # update(batch, hem_batch, policy, critic, actor_target, critic_target, policy_opt, critic_opt, ...)
            hem_hybrid.update(batch, (x_h, a_h), *nets, opts[0], opts[1], args, 0.98, (-1.0, 0.0))
        else:
            her_ddpg.update(batch, *nets, opts[0], opts[1], args, 0.98, (-1.0, 0.0))
        return torch.cat([p.detach().flatten() for p in nets[0].parameters()])

    ddpg = step(0.0, hybrid=False)
    assert torch.allclose(step(0.0), ddpg)
    bc = (a_h - actor(x_h)).pow(2).sum(-1).mean()
    grad_bc = torch.cat([g.flatten() for g in torch.autograd.grad(bc, list(actor.parameters()))])
    assert torch.allclose(step(0.5) - ddpg, -0.5 * grad_bc, atol=1e-6)


def test_hybrid_target_clip_follows_the_reward_convention():
    gamma, d = 0.98, torch.zeros(3)
    q_next = torch.tensor([-1e3, 20.0, 1e3])
    torch.testing.assert_close(td_target(torch.zeros(3), d, q_next, gamma, (-1.0, 0.0)),
                               torch.tensor([-1 / (1 - gamma), 0.0, 0.0]))  # -1/0: returns in [-50, 0]
    torch.testing.assert_close(td_target(torch.zeros(3), d, q_next, gamma, (0.0, 1.0)),
                               torch.tensor([0.0, gamma * 20.0, 1 / (1 - gamma)]))  # 0/1: returns in [0, 50]


def test_the_cloned_action_is_the_executed_one_after_noise_and_clipping():
    """Navigation moves by 0.2 x action, so the stored actions must explain every stored transition."""
    vec_env = gym.vector.SyncVectorEnv([lambda: envs.make("Navigation:k=2") for _ in range(3)])
    vec_env.reset(seed=0)
    policy, norm = GaussianPolicy(2, 2, 2, [16], 1.0), lambda v: v.astype(np.float32)
    args = SimpleNamespace(noise_eps=0.5)
    ep = rollout(vec_env, policy, norm, norm, 50, "cpu", args, np.random.default_rng(0), 1.0, explore=True)
    for i in range(3):
        n = ep.ep_len[i]
        np.testing.assert_allclose(ep.obs[i, 1:n + 1], np.clip(ep.obs[i, :n] + 0.2 * ep.actions[i, :n], -1, 1),
                                   atol=1e-5)
    assert np.abs(ep.actions).max() <= 1.0 and (np.abs(ep.actions) == 1.0).any()  # clipped to the box


def test_discrete_exploration_samples_pi_then_random_eps_uniform():
    policy = CategoricalPolicy(1, 1, 4, [8])
    with torch.no_grad():
        policy.net[-1].weight.zero_()
        policy.net[-1].bias.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])))
    x, rng = torch.zeros(40_000, 2), np.random.default_rng(0)
    counts = lambda a: np.bincount(a, minlength=4) / len(a)  # noqa: E731
    explore = lambda random_eps: select_action(policy, x, SimpleNamespace(random_eps=random_eps), rng, 1,  # noqa: E731
                                               explore=True)
    np.testing.assert_allclose(counts(explore(0.0)), [0.1, 0.2, 0.3, 0.4], atol=0.01)
    np.testing.assert_allclose(counts(explore(1.0)), 0.25, atol=0.01)
    assert (select_action(policy, x[:5], None, rng, 1, explore=False) == 3).all()  # greedy: argmax


def test_inverse_cdf_returns_the_last_action_when_the_float32_cumsum_ends_below_u():
    probs = np.array([[0.5, 0.25, 0.2499999]], np.float32)
    assert probs.cumsum(-1)[0, -1] < 1  # float32 rounding: the cdf ends just below 1
    u = np.array([[0.99999994]], np.float32)  # the largest float32 below 1, above the cdf's end
    assert u[0, 0] >= probs.cumsum(-1)[0, -1]
    assert inverse_cdf(probs, u)[0] == 2  # without the pin, no entry exceeds u and argmax returns action 0
    assert list(inverse_cdf(probs.repeat(3, 0), np.array([[0.0], [0.5], [0.75]]))) == [0, 1, 2]


def test_navigation_noise_is_the_papers_absolute_sigma_a_and_other_envs_keep_half_of_max_u():
    """Sec. 3.1: sigma_a = 0.5 on the paper's [-0.2, 0.2] navigation actions, here [-1, 1] moving 0.2 x a: 2.5 x max_u.
    Before clipping, the executed step then has std 0.2 x 2.5 = 0.5, so P(|a'| >= 1) = P(|z| >= 0.4) = 0.69."""
    assert fill_defaults(Args(env="Navigation:k=5")).noise_eps == 2.5
    assert fill_defaults(Args(env="FetchReach")).noise_eps == 0.5 and fill_defaults(Args(env="Point2D")).noise_eps == 0.5
    assert fill_defaults(Args(env="Navigation:k=5", noise_eps=0.5)).noise_eps == 0.5  # a set flag is kept
    assert fill_defaults(Args(env="FetchReach")).total_timesteps == 12_000  # the demo budget
    assert fill_defaults(Args(env="Point2D")).total_timesteps == 5_000
    policy = GaussianPolicy(2, 2, 2, [8], 1.0)
    with torch.no_grad():
        policy.net[-1].weight.zero_()
        policy.net[-1].bias.zero_()  # mu = 0
        policy.log_std.fill_(-5.0)  # sigma = 0.007: the exploration noise dominates
    a = select_action(policy, torch.zeros(20_000, 4), SimpleNamespace(noise_eps=2.5), np.random.default_rng(0), 1.0,
                      explore=True)
    assert abs((np.abs(a) == 1.0).mean() - 0.69) < 0.01


def test_the_agent_and_env_0_draw_independent_streams_from_one_seed():
    """Before: default_rng(seed) and env.reset(seed=seed) gave env 0 and the agent the same numbers."""
    def first_state(env_seed):  # Navigation's reset draws the start state first, uniform in [-1, 1]^k
        return envs.make("Navigation:k=4").reset(seed=env_seed)[0]["observation"]

    np.testing.assert_allclose(first_state(1), np.random.default_rng(1).uniform(-1, 1, 4), atol=1e-6)  # the old bug
    _, rng, env_seed = seed_everything(Args(seed=1))
    assert not np.allclose(first_state(env_seed), rng.uniform(-1, 1, 4), atol=0.1)
    _, rng_again, env_seed_again = seed_everything(Args(seed=1))
    assert env_seed_again == env_seed and rng_again.random() == np.random.default_rng(
        np.random.SeedSequence(1).spawn(2)[0]).random()  # still reproducible from the seed


# -- the script ----------------------------------------------------------------------------------------------------

TINY = ["--total-timesteps", "200", "--n-batches", "3", "--hidden-dims", "16", "16",
        "--batch-size", "16", "--eval-interval", "100", "--n-test-rollouts", "2"]


@pytest.fixture
def train(tmp_path, monkeypatch, capsys):
    """train(module, "--env", ...): module.main() in this process, on the arguments as the command line parses them
    (no start-up cost of a new interpreter; tests/test_project.py runs every script as a process); returns what it
    printed. runs/ lands in tmp_path."""
    monkeypatch.chdir(tmp_path)

    def train(module, *cli):
        capsys.readouterr()
        module.main(tyro.cli(module.Args, args=list(cli)))
        return capsys.readouterr().out
    return train


def test_help_states_every_default_that_runs(capsys):
    with pytest.raises(SystemExit) as exit_:
        tyro.cli(Args, args=["--help"])
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert exit_.value.code == 0
    for flag, default in [("--n-episodes", "(default: 10)"), ("--n-batches", "(default: 20)"),
                          ("--noise-eps", "in units of max_u (unset: 0.5; 2.5 on Navigation"),
                          ("--random-eps", "(discrete actions only) (default: 0.2)")]:
        assert re.search(re.escape(flag) + r" \S+ [^-]*" + re.escape(default), text), (flag, text)
    assert "--sigma-a" not in text and "--eps " not in text and "--eta" not in text


def test_a_budget_below_one_iteration_prints_the_header_one_evaluation_and_the_summary(train):
    """PointMaze rewards 0/1 (the other tasks -1/0); hEM never reads rewards, so it runs there unchanged."""
    out = train(hem, "--env", "PointMaze_UMaze-v3", *TINY, "--n-episodes", "2", "--total-timesteps", "1")
    lines = out.strip().splitlines()
    assert re.fullmatch(r"hem \| PointMaze_UMaze-v3 \| 1 env steps \| seed 1 \| "
                        r"run runs/PointMaze_UMaze-v3__hem__1__\d+ \| tensorboard --logdir runs", lines[0]), lines[0]
    assert len(lines) == 3 and len(eval_lines(out)) == 1, out  # one iteration, then its evaluation
    summary = r"hem done \| success \d\.\d\d \| [\d,]+ env steps \| 3 gradient steps \| \d+ s"
    assert re.fullmatch(summary, lines[2]), lines[2]


@pytest.mark.parametrize("module,env,extra", [(hem, "BitFlip", ["--on-policy", "--n-episodes", "2"]),
                                              (hem_hybrid, "Point2D", [])])
def test_smoke_train_save_and_reload(train, tmp_path, module, env, extra):
    assert eval_lines(train(module, "--env", env, "--save-model", *TINY, *extra))
    [ckpt] = glob.glob(str(tmp_path / "runs" / "*" / f"{module.ALGO}.pt"))
    assert glob.glob(str(tmp_path / "runs" / "*" / "events.out.tfevents.*"))
    out = train(module, "--eval-checkpoint", ckpt, "--n-test-rollouts", "4")
    assert re.search(rf"{env}: success rate \d\.\d+, mean return -?\d+\.\d+ over 4 episodes", out), out
    saved = torch.load(ckpt, weights_only=True)  # tensors and plain types only
    assert saved["algo"] == module.ALGO and {"policy", "o_norm", "g_norm", "args"} <= set(saved)
    assert saved["o_norm"]["count"] > 0


@pytest.mark.parametrize("args,message", [(["--env", "Pendulum-v1"], "not goal-conditioned"),
                                          (["--env", "FetchReachDense-v4"], "dense or unknown reward"),
                                          (["--eval-checkpoint", "missing.pt"], "no checkpoint")])
def test_bad_input_is_refused_with_a_one_line_message(train, args, message):
    """The script prints an EnvError as the one line `error: ...` (tests/test_project.py runs that path)."""
    with pytest.raises(envs.EnvError, match=re.escape(message)) as error:
        train(hem, *args)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("env,flags,message", [("DriveSeek", {}, "cannot be relabelled"),
                                               ("Point2D", dict(n_episodes=0), "must be positive"),
                                               ("Point2D", dict(random_eps=1.5), "[0, 1]"),
                                               ("Point2D", dict(noise_eps=-0.1), ">= 0")])
def test_settings_the_script_cannot_run_are_refused_by_check_env(env, flags, message):
    """The script prints these EnvErrors as the one line `error: ...` (the test above checks that path)."""
    args = fill_defaults(Args(env=env, **flags))
    with pytest.raises(envs.EnvError, match=re.escape(message)):
        check_env(envs.make(env), args)


@pytest.mark.parametrize("env,flags,message", [("BitFlip", {}, "needs a Box"),
                                               ("Point2D", dict(polyak=1.5), "[0, 1]"),
                                               ("Point2D", dict(eta=-0.1), ">= 0")])
def test_settings_the_hybrid_cannot_run_are_refused_by_its_check_env(env, flags, message):
    with pytest.raises(envs.EnvError, match=re.escape(message)):
        hem_hybrid.check_env(envs.make(env), hem_hybrid.Args(env=env, **flags))


class CreatesAFile:
    """Unpickling this object opens (creates) the marker file: code run by loading a checkpoint."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_file_that_is_not_a_hem_checkpoint_is_refused_in_one_line_and_runs_nothing(run, tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "garbage.pt").write_text("not a checkpoint\n")
    torch.save({"algo": "hem", "policy": CreatesAFile(str(marker))}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"algo": "hem", "policy": CreatesAFile(str(marker))}, f)
    torch.save({"algo": "her_ddpg", "actor": {}}, tmp_path / "other.pt")
    out = run("hem.py", "--eval-checkpoint", str(tmp_path / "evil.pt"))  # as a user runs it: one line, nonzero exit
    assert_one_line_error(out, f"error: {tmp_path / 'evil.pt'} is not a hem.py checkpoint")
    for name in ("garbage.pt", "evil.pkl", "other.pt"):  # the same loader, in process
        with pytest.raises(envs.EnvError, match="is not a hem.py checkpoint"):
            load_checkpoint(str(tmp_path / name))
    assert not os.path.exists(marker)


def test_learns_bitflip_and_the_m_step_is_what_makes_it_learn(train):
    """BitFlip n = 8, 4k env steps: hEM >= 0.8 greedy success over 50 episodes; with no M-step (U = 0) the same
    budget stays at the untrained policy's level."""
    args = ["--env", "BitFlip:n=8", "--n-episodes", "20", "--n-batches", "50", "--batch-size", "128",
            "--total-timesteps", "4000", "--eval-interval", "2000", "--n-test-rollouts", "50", "--seed", "1"]
    learned, untrained = train(hem, *args), train(hem, *args, "--n-batches", "0")
    assert final_success(learned) >= 0.8, learned
    assert final_success(untrained) <= 0.2, untrained


@pytest.mark.slow
def test_learns_continuous_navigation(run):
    """Navigation k = 2 (Gaussian policy), 4k env steps: >= 0.8 greedy success over 50 episodes."""
    out = run("hem.py", "--env", "Navigation:k=2", "--n-episodes", "20", "--n-batches", "50", "--total-timesteps",
              "4000", "--eval-interval", "2000", "--n-test-rollouts", "50", "--seed", "1", timeout=600)
    assert final_success(out.stdout) >= 0.8, out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_default_fetch_reach_demo_ends_solved(run, seed):
    out = run("hem.py", "--env", "FetchReach", "--seed", str(seed), timeout=600)
    assert out.returncode == 0, out.stderr
    assert "step    12000/12000" in out.stdout and final_success(out.stdout) >= 0.9, out.stdout
