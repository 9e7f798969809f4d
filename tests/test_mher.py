"""mher.py: model-based relabeling (where rollouts start, which goal they use, what they change), the masked supervised
term, the dynamics model, the reward conventions; then the script as a user runs it."""

import copy
import os
import re
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro

import envs
import mher
from conftest import assert_one_line_error, eval_lines, final_success, train_save_and_reload
from mher import Actor, Dynamics, EpisodeBuffer, Normalizer, goal_indices, mbr_relabel, sl_loss, td_target

ARGS = SimpleNamespace(n_steps=5, noise_eps=0.2, mbr_ratio=0.8)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks, as the script runs them (--torch-threads 1): more threads only contend on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecordingActor(torch.nn.Module):
    """A stand-in target actor that remembers its inputs and always pushes +0.5 on every axis."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return torch.full((len(x), 2), 0.5)


class PerfectPoint2D:
    """A stand-in model that returns the true next state of the open Point2D (B = 5), and records its calls."""

    def __init__(self):
        self.calls = []

    def predict(self, s, a):
        self.calls.append(s.copy())
        return np.clip(s + np.clip(a, -1, 1), -5, 5)


def identity_norm(dim):
    return Normalizer(dim, clip_range=np.inf)  # never updated: mean 0, std 1, no clip


def test_perfect_point2d_stand_in_is_the_true_dynamics():
    env, rng = envs.make("Point2D").unwrapped, np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(200):
        p, a = env.p.copy(), rng.uniform(-1.5, 1.5, 2)
        env.step(a)
        np.testing.assert_allclose(env.p, PerfectPoint2D().predict(p, a), atol=1e-6)


def test_model_rollouts_start_at_the_real_next_state_and_use_the_original_goal():
    rng = np.random.default_rng(0)
    o2, g = rng.uniform(-2, 2, (256, 2)).astype(np.float32), rng.uniform(-4, 4, (256, 2)).astype(np.float32)
    actor, model = RecordingActor(), PerfectPoint2D()
    g_new, mask = mbr_relabel(o2, g.copy(), actor, model, identity_norm(2), identity_norm(2), np.array([0, 1]), ARGS,
                              rng, 1.0, "cpu")
    np.testing.assert_array_equal(model.calls[0], o2)  # s'_0 = s_{t+1}, the real next state
    assert len(actor.inputs) == ARGS.n_steps
    for x in actor.inputs:  # every rollout step is conditioned on the ORIGINAL goal, not on g'
        np.testing.assert_allclose(x[:, 2:].numpy(), g)
    np.testing.assert_array_equal(g_new[~mask], g[~mask])  # 20 % keep the desired goal
    assert abs(mask.mean() - 0.8) < 0.07 and not np.allclose(g_new[mask], g[mask])


def point2d_buffer(rng, n_episodes=10):
    env = envs.make("Point2D")
    buf = EpisodeBuffer(n_episodes * 100, 100, 2, 2, 2, env.unwrapped, 0.0, rng)
    for seed in range(n_episodes):
        ob, _ = env.reset(seed=seed)
        obs, acts = [ob["observation"]], []
        for _ in range(100):
            acts.append(rng.uniform(-1, 1, 2).astype(np.float32))
            obs.append(env.step(acts[-1])[0]["observation"])
        obs = np.array(obs)
        buf.store(obs[None], obs[None], np.repeat(ob["desired_goal"][None, None], 100, 1), np.array(acts)[None],
                  np.array([100]))
    return env, buf


def test_relabeling_changes_only_the_goal_and_goals_are_reachable_with_a_perfect_model():
    """With the true dynamics and a noise-free actor, every relabelled goal is where k = 0..n policy steps from the
    real s_{t+1} lead: replaying the policy in the real env from s_{t+1} reaches it exactly."""
    rng = np.random.default_rng(1)
    env, buf = point2d_buffer(rng)
    b = buf.sample(64)
    before = [x.copy() for x in b]
    torch.manual_seed(0)
    actor = Actor(2, 2, 2, [32, 32], 1.0)
    norm = identity_norm(2)
    args = SimpleNamespace(n_steps=5, noise_eps=0.0, mbr_ratio=1.0)
    g_new, mask = mbr_relabel(b.next_obs, b.g, actor, PerfectPoint2D(), norm, norm, np.array([0, 1]), args, rng, 1.0,
                              "cpu")
    for x, y in zip(b, before):  # s_t, a_t, s_{t+1} and the batch's own goals stay as they were
        np.testing.assert_array_equal(x, y)
    assert mask.all()
    for i in range(64):
        env.reset(seed=0)
        env.unwrapped.p = b.next_obs[i].astype(np.float64)
        visited = [b.next_obs[i]]
        for _ in range(args.n_steps):
            x = torch.as_tensor(np.concatenate([visited[-1], b.g[i]])[None], dtype=torch.float32)
            visited.append(env.step(actor(x)[0].detach().numpy())[0]["achieved_goal"])
        assert min(np.abs(v - g_new[i]).max() for v in visited) < 1e-4


def test_rewards_are_recomputed_for_the_relabelled_goals_from_the_next_achieved_goal():
    rng = np.random.default_rng(2)
    env, buf = point2d_buffer(rng)
    b = buf.sample(500)
    new = buf.with_goals(b, b.ag_next + rng.uniform(-1.2, 1.2, b.g.shape).astype(np.float32))
    np.testing.assert_array_equal(new.rewards, env.unwrapped.compute_reward(b.ag_next, new.g, None))
    assert 0.2 < (new.rewards == 0).mean() < 0.9  # both successes and failures, so the check can fail
    for field in ("obs", "actions", "next_obs", "ag_next"):  # only the goal and what follows from it change
        np.testing.assert_array_equal(getattr(new, field), getattr(b, field))


def test_supervised_term_is_masked_to_relabelled_samples_and_averaged_over_the_whole_batch():
    torch.manual_seed(0)
    actor = Actor(2, 2, 3, [16], 1.0)
    x, a = torch.randn(4, 4), torch.rand(4, 3) * 2 - 1
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    per_sample = (a - actor(x)).pow(2).mean(-1)
    assert sl_loss(actor, x, a, mask).item() == pytest.approx((per_sample[0] + per_sample[2]).item() / 4)
    assert sl_loss(actor, x, a, torch.zeros(4)).item() == 0.0
    x_unmasked = x.clone().requires_grad_(True)
    sl_loss(actor, x_unmasked, a, mask).backward()
    assert (x_unmasked.grad[[1, 3]] == 0).all() and (x_unmasked.grad[[0, 2]] != 0).any()


def test_no_mbr_ablation_takes_a_separate_sl_step_then_3_target_updates_and_ddpg_on_the_desired_goals():
    """ddpg_sl as the authors' code runs it: one Adam step on the unweighted SL loss of the MBR samples alone, 3 soft
    updates of both targets, then DDPG whose actor loss keeps alpha * mask * BC on the desired goals."""
    torch.manual_seed(0)
    actor, actor_target = Actor(2, 2, 2, [16], 1.0), Actor(2, 2, 2, [16], 1.0)
    critic, critic_target = mher.Critic(2, 2, 2, [16], 1.0), mher.Critic(2, 2, 2, [16], 1.0)
    actor_opt, critic_opt = torch.optim.Adam(actor.parameters(), 1e-3), torch.optim.Adam(critic.parameters(), 1e-3)
    x, x2, x_sl = torch.randn(8, 4), torch.randn(8, 4), torch.randn(8, 4)  # x_sl: other goals than x's
    a, r, d = torch.rand(8, 2) * 2 - 1, -torch.ones(8), torch.zeros(8)
    mask = torch.tensor([1.0, 0, 1, 1, 0, 1, 0, 1])
    start = {name: copy.deepcopy(net) for name, net in
             (("actor", actor), ("actor_target", actor_target), ("critic", critic), ("critic_target", critic_target))}
    actor_steps, critic_steps = [], []
    actor_opt.register_step_pre_hook(lambda *_: actor_steps.append(
        ([p.grad.clone() for p in actor.parameters()], copy.deepcopy(actor), copy.deepcopy(critic))))
    critic_opt.register_step_pre_hook(lambda *_: critic_steps.append(
        (copy.deepcopy(actor), copy.deepcopy(actor_target), copy.deepcopy(critic_target))))
    args = SimpleNamespace(algo="ddpg_sl", polyak=0.9, action_l2=1.0)
    out = mher.update((x, a, r, x2, d, x_sl, mask), actor, critic, actor_target, critic_target, actor_opt,
                      critic_opt, args, 0.99, (-1.0, 0.0), 3.0)

    def grads(loss, net):
        net.zero_grad()
        loss.backward()
        return [p.grad for p in net.parameters()]
    assert len(actor_steps) == 2 and len(critic_steps) == 1  # the SL step, then the DDPG actor step
    sl = (a[mask > 0] - start["actor"](x_sl[mask > 0])).pow(2).mean()  # weight 1, mean over relabelled samples only
    assert out["sl_loss"] == pytest.approx(sl.item())
    for g, g_ref in zip(actor_steps[0][0], grads(sl, start["actor"])):
        torch.testing.assert_close(g, g_ref)
    after_sl, target_at_critic_step, critic_target_at_critic_step = critic_steps[0]
    for net, target, moved in ((start["actor_target"], after_sl, target_at_critic_step),
                               (start["critic_target"], start["critic"], critic_target_at_critic_step)):
        for p0, p, p3 in zip(net.parameters(), target.parameters(), moved.parameters()):  # 0.9^3 t + (1 - 0.9^3) net
            torch.testing.assert_close(p3, 0.9**3 * p0 + (1 - 0.9**3) * p, rtol=1e-5, atol=1e-6)
    _, actor_before, critic_now = actor_steps[1]
    pi = actor_before(x)  # DDPG on the desired goals x; the code's leftover BC term also sees x, not x_sl
    ddpg = -critic_now(x, pi).mean() + (pi**2).mean() + 3.0 * (mask * (a - pi).pow(2).mean(-1)).mean()
    for g, g_ref in zip(actor_steps[1][0], grads(ddpg, actor_before)):
        torch.testing.assert_close(g, g_ref)


def test_model_relabel_keeps_the_desired_goals_for_the_critic_in_the_no_mbr_ablation():
    rng = np.random.default_rng(3)
    _, buf = point2d_buffer(rng, n_episodes=3)
    b = buf.sample(64)
    model = Dynamics(2, 2, [16], ensemble=1, loss="mse", lr=1e-3, device="cpu")
    norm = identity_norm(2)
    for algo, critic_keeps_g in (("ddpg_sl", True), ("mher", False)):
        args = SimpleNamespace(algo=algo, n_steps=5, noise_eps=0.2, mbr_ratio=0.8, dyn_updates=1)
        b_critic, g_sl, mask, _, _ = mher.model_relabel(b, buf, model, RecordingActor(), norm, norm, np.array([0, 1]),
                                                        args, rng, 1.0, "cpu")
        assert not np.allclose(g_sl[mask > 0], b.g[mask > 0])  # the SL goals are MBR goals either way
        assert np.array_equal(b_critic.g, b.g) == critic_keeps_g
        assert np.array_equal(b_critic.rewards, b.rewards) == critic_keeps_g


def test_the_agent_and_the_envs_draw_independent_random_streams():
    """default_rng(seed) and gymnasium's env.reset(seed=seed) draw one same stream; the seeds main() uses must not."""
    def env_stream(seed):  # what env.reset(seed=seed) seeds the env with
        return gym.utils.seeding.np_random(seed)[0]
    assert np.array_equal(np.random.default_rng(7).random(8), env_stream(7).random(8))  # the collision to avoid
    for seed in (0, 1, 7):
        args = SimpleNamespace(seed=seed, torch_deterministic=True, torch_threads=1)
        rng, env_seed = mher.seed_everything(args)
        agent = rng.random(8)
        for i in range(4):  # env i of the vector env is reset with env_seed + i
            assert not np.allclose(agent, env_stream(env_seed + i).random(8))
        rng_again, env_seed_again = mher.seed_everything(args)  # and the same seed gives the same streams
        assert env_seed_again == env_seed and np.array_equal(rng_again.random(8), agent)
    assert len({mher.seed_everything(SimpleNamespace(seed=s, torch_deterministic=True, torch_threads=1))[1]
                for s in range(20)}) == 20


def test_goal_indices_find_phi_inside_the_observation_or_refuse_the_env():
    env = envs.make("FetchReach")
    env.reset(seed=0)
    steps = [env.step(env.action_space.sample())[0] for _ in range(5)]
    obs, ag = np.array([s["observation"] for s in steps]), np.array([s["achieved_goal"] for s in steps])
    np.testing.assert_array_equal(goal_indices(obs, ag, "FetchReach"), [0, 1, 2])  # the gripper position
    with pytest.raises(envs.EnvError, match="achieved goal to be coordinates of the observation"):
        goal_indices(obs[:, 3:], ag, "FetchReach")


def test_dynamics_model_learns_point_mass_moves_in_normalised_delta_space():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = Dynamics(2, 2, [64, 64], ensemble=2, loss="mse", lr=1e-3, device="cpu")
    s = rng.uniform(-4, 4, (20_000, 2)).astype(np.float32)
    a = rng.uniform(-1, 1, (20_000, 2)).astype(np.float32)
    s2 = np.clip(s + a, -5, 5)
    for _ in range(200):  # the error after 200 steps was 0.024
        i = rng.integers(0, 20_000, 256)
        model.fit(SimpleNamespace(obs=s[i], actions=a[i], next_obs=s2[i]), rng, 1)
    error = np.abs(model.predict(s[:1000], a[:1000]) - s2[:1000]).mean()
    assert error < 0.1, error  # against a mean move of 0.5 per axis


# -- rewards --------------------------------------------------------------------------------------------------------

def test_target_clip_follows_the_envs_reward_convention():
    """-1/0 (Fetch, Point2D): returns in [-1/(1-gamma), 0]; 0/1 (PointMaze): [0, 1/(1-gamma)], which -1/0's clip
    would flatten to 0."""
    gamma, d = 0.9, torch.zeros(3)
    minus = envs.sparse_rewards(envs.make("Point2D"))
    y = td_target(torch.tensor([0.0, -1.0, -1.0]), d, torch.tensor([5.0, -3.0, -50.0]), gamma, minus)
    torch.testing.assert_close(y, torch.tensor([0.0, -1 - gamma * 3, -1 / (1 - gamma)]))
    plus = envs.sparse_rewards(envs.make("PointMaze_UMaze-v3"))
    y = td_target(torch.tensor([1.0, 0.0, 0.0]), d, torch.tensor([5.0, -3.0, 50.0]), gamma, plus)
    torch.testing.assert_close(y, torch.tensor([1 + gamma * 5, 0.0, 1 / (1 - gamma)]))


def test_a_zero_one_reward_env_trains_end_to_end(train):
    out = train("--env", "PointMaze_UMaze-v3", "--total-timesteps", "400", "--random-episodes", "2",
                "--eval-interval", "100", "--n-batches", "2", "--dyn-warmup", "2", "--hidden-dims", "16",
                "--dyn-hidden-dims", "16", "--batch-size", "16", "--n-test-rollouts", "1")
    assert len(eval_lines(out)) == 2


def test_a_dense_reward_is_refused(train):
    with pytest.raises(envs.EnvError, match="dense or unknown reward"):
        train("--env", "FetchReachDense-v4")


# -- the script ----------------------------------------------------------------------------------------------------

TINY = ["--total-timesteps", "600", "--random-episodes", "3", "--eval-interval", "100", "--n-batches", "2",
        "--dyn-warmup", "2", "--hidden-dims", "16", "--dyn-hidden-dims", "32", "--batch-size", "16",
        "--n-test-rollouts", "2"]


@pytest.fixture
def train(tmp_path, monkeypatch, capsys):
    """train("--env", ...): main() in this process, on the arguments as the command line parses them (no start-up
    cost of a new interpreter); returns what it printed. runs/ lands in tmp_path."""
    monkeypatch.chdir(tmp_path)

    def train(*cli):
        capsys.readouterr()
        mher.main(tyro.cli(mher.Args, args=list(cli)))
        return capsys.readouterr().out
    return train


def test_help_is_the_manual(capsys):
    with pytest.raises(SystemExit) as exit_:  # in this process: the script's own start-up is tested below
        tyro.cli(mher.Args, args=["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--algo" in out and "--mbr-ratio" in out
    assert "--eval-interval" in out and "--n-cycles" not in out


def test_a_run_prints_the_header_one_line_per_evaluation_after_the_warm_up_and_the_summary(train):
    lines = train("--env", "Point2D", *TINY).strip().splitlines()
    assert re.fullmatch(r"mher \| Point2D-v0 \| 600 env steps \| seed 1 \| run runs/Point2D__mher_mher__1__\d+ \| "
                        r"tensorboard --logdir runs", lines[0]), lines[0]
    # 3 random episodes (300 steps, no evaluation), then one every 100 env steps: 3 training episodes x 2 batches
    assert [line.split(" | ")[0] for line in lines[1:-1]] == [f"step      {s}/600" for s in (400, 500, 600)]
    assert re.fullmatch(r"mher done \| success \d\.\d\d \| 600 env steps \| 6 gradient steps \| \d+ s", lines[-1])


def test_a_budget_below_the_warm_up_still_ends_with_an_evaluation_and_the_summary(train):
    out = train("--env", "Point2D", "--total-timesteps", "150", "--hidden-dims", "16", "--n-test-rollouts", "2")
    assert len(eval_lines(out)) == 1  # 2 of the 20 random episodes, then the evaluation that ends every run
    assert re.search(r"^mher done \| success \d\.\d\d \| 200 env steps \| 0 gradient steps", out, re.M)


def test_smoke_train_save_and_reload(run, tmp_path):
    stdout, ckpt = train_save_and_reload(run, tmp_path, ["mher.py"], "Point2D", *TINY)
    assert len(eval_lines(stdout)) == 3
    saved = torch.load(ckpt, weights_only=True)  # tensors and plain types only
    assert saved["algo"] == "mher" and {"actor", "o_norm", "g_norm", "args"} <= set(saved)
    assert saved["o_norm"]["count"] > 0


@pytest.mark.parametrize("algo,env", [("her", "Point2DFourRoom"), ("ddpg", "Point2D"), ("ddpg_sl", "FetchReach"),
                                      ("ddpg_mbr", "ContinuousSeek:d=5"), ("gcsl", "GoalReacher"),
                                      ("mher", "GoalReacher")])
def test_smoke_every_method_on_the_goal_envs(train, algo, env):
    """ContinuousSeek ends episodes on success; the model there is the code's 3-member L1 ensemble."""
    out = train(*TINY, "--algo", algo, "--env", env, "--ensemble", "3", "--dyn-loss", "l1", "--episode-length", "50")
    assert len(eval_lines(out)) >= 2 and "mher done" in out  # evaluations from 200 steps on (after 3 random episodes)


@pytest.mark.parametrize("args,message", [(["--env", "BitFlip"], "continuous Box action space"),
                                          (["--env", "FetchReech"], "did you mean FetchReach"),
                                          (["--eval-interval", "0"], "must be positive"),
                                          (["--mbr-ratio", "1.5"], "[0, 1]"),
                                          (["--eval-checkpoint", "missing.pt"], "no checkpoint")])
def test_bad_input_is_refused_with_an_error_that_names_it(train, args, message):
    with pytest.raises(envs.EnvError, match=re.escape(message)):
        train(*args)


def test_a_user_error_is_one_line_on_stderr_without_a_traceback(run):
    assert_one_line_error(run("mher.py", "--env", "Point2D", "--mbr-ratio", "1.5"), "--mbr-ratio")


class WritesAMarker:
    """Unpickled by plain pickle, this opens (creates) the marker file: code a checkpoint must never run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_garbage_or_malicious_checkpoint_is_refused_in_one_line_and_runs_nothing(run, tmp_path):
    marker = str(tmp_path / "pwned")
    evil = tmp_path / "evil.pt"
    torch.save({"algo": "mher", "actor": WritesAMarker(marker)}, evil)
    torch.load(evil, weights_only=False)  # the file is armed: a plain load runs the code
    assert os.path.exists(marker)
    os.remove(marker)
    assert_one_line_error(run("mher.py", "--eval-checkpoint", str(evil)), f"{evil} is not a mher.py checkpoint")
    assert not os.path.exists(marker)
    garbage, other = tmp_path / "garbage.pt", tmp_path / "other.pt"
    garbage.write_text("not a checkpoint\n")
    torch.save({"algo": "her_ddpg", "actor": {}}, other)
    for path in (evil, garbage, other):
        with pytest.raises(envs.EnvError, match="is not a mher.py checkpoint"):
            mher.load_checkpoint(str(path))
    assert not os.path.exists(marker)


def test_mher_learns_point2d_in_a_few_episodes_where_her_has_not_yet(train):
    """Point2D, 20 random + 10 training episodes, 25 test episodes at the end: MHER >= 0.7 (this command gave 0.96;
    over 3 seeds MHER first reached 0.9 after 4-9 episodes); HER with the same schedule <= 0.4 (0.08; it needs 23-26
    episodes)."""
    args = ["--env", "Point2D", "--total-timesteps", "3000", "--n-test-rollouts", "25", "--eval-interval", "3000"]
    mher_out, her_out = train(*args), train(*args, "--algo", "her")
    assert final_success(mher_out) >= 0.7, mher_out
    assert final_success(her_out) <= 0.4, her_out


@pytest.mark.slow
def test_default_fetch_reach_demo_ends_solved(run):
    out = run("mher.py", "--env", "FetchReach", timeout=900)
    assert out.returncode == 0, out.stderr
    assert "step    10000" in out.stdout and final_success(out.stdout) >= 0.9, out.stdout
