"""her_ddpg.py: the sampler's relabeling, the target clip and the normaliser; then the script as a user runs it."""

import glob
import re

import numpy as np
import pytest
import torch

import envs
from conftest import (assert_one_line_error, eval_lines, final_success, indexed_episodes, IndexGoalEnv,
                      run_in_one_process, train_save_and_reload)
from her_ddpg import EpisodeBuffer, Normalizer, td_target

T = 10


def indexed_buffer(strategy, replay_k=4, n_episodes=50, seed=0, ep_len=None):
    """Episodes whose achieved goal at step t of episode e is (e, t), and whose desired goal is (-1, -1)."""
    rng = np.random.default_rng(seed)
    buf = EpisodeBuffer(n_episodes * T, T, 2, 2, 1, IndexGoalEnv(), strategy, replay_k, rng)
    buf.store(*indexed_episodes(n_episodes, T, ep_len))
    return buf


def test_future_goals_come_from_later_steps_of_the_same_episode_never_past_its_end():
    lengths = np.random.default_rng(1).integers(1, T + 1, 50)  # some episodes ended early (success)
    buf = indexed_buffer("future", ep_len=lengths)
    o, _, _, _, g, _ = buf.sample(20_000)
    e, t = o[:, 0].astype(int), o[:, 1].astype(int)
    relabelled = g[:, 0] >= 0
    assert (t < lengths[e]).all()  # transitions only from inside each episode
    assert (g[relabelled, 0] == e[relabelled]).all()  # same episode
    assert (g[relabelled, 1] > t[relabelled]).all()  # strictly later: t+1 ..
    assert (g[relabelled, 1] <= lengths[e[relabelled]]).all()  # .. up to the episode's end


def test_relabelled_fraction_matches_replay_k():
    for k, expected in [(4, 0.8), (1, 0.5), (0, 0.0)]:
        _, _, _, _, g, _ = indexed_buffer("future", replay_k=k).sample(20_000)
        assert abs((g[:, 0] >= 0).mean() - expected) < 0.015


def test_final_and_episode_strategies():
    o, _, _, _, g, _ = indexed_buffer("final").sample(5_000)
    relabelled = g[:, 0] >= 0
    assert (g[relabelled, 1] == T).all() and (g[relabelled, 0] == o[relabelled, 0]).all()
    _, _, _, _, g, _ = indexed_buffer("episode").sample(20_000)
    steps = g[g[:, 0] >= 0, 1]
    assert steps.min() == 1 and steps.max() == T  # anywhere in 1 .. T, earlier steps included
    _, _, _, _, g, _ = indexed_buffer("none").sample(5_000)
    assert (g == -1).all()


def test_rewards_and_terminations_are_recomputed_for_the_new_goals():
    env = envs.make("Navigation:k=2")  # ends on success, so terminations must follow the relabelled goal
    rng = np.random.default_rng(0)
    buf = EpisodeBuffer(10_000, 50, 2, 2, 2, env.unwrapped, "future", 4, rng)
    for seed in range(20):
        ob, _ = env.reset(seed=seed)
        obs, ag, g, acts = [ob["observation"]], [ob["achieved_goal"]], [], []
        for t in range(50):
            a = env.action_space.sample()
            g.append(ob["desired_goal"])
            ob, _, terminated, truncated, _ = env.step(a)
            obs.append(ob["observation"])
            ag.append(ob["achieved_goal"])
            acts.append(a)
            if terminated:
                break
        pad = 51 - len(obs)
        buf.store(np.array([obs + [obs[-1]] * pad]), np.array([ag + [ag[-1]] * pad]),
                  np.array([g + [g[-1]] * pad]), np.array([acts + [acts[-1]] * pad]), np.array([len(acts)]))
    _, _, r, o2, g, d = buf.sample(4_000)
    np.testing.assert_array_equal(r, env.unwrapped.compute_reward(o2, g, None))  # ag = obs in Navigation
    np.testing.assert_array_equal(d, env.unwrapped.compute_terminated(o2, g, None))
    assert (r == 0).mean() > 0.1 and (d == 1).any()  # relabeling creates successes, which end episodes


def test_target_is_clipped_to_the_range_of_returns():
    gamma = 0.98
    r = torch.tensor([0.0, -1.0, -1.0, 0.0])
    d = torch.tensor([0.0, 0.0, 0.0, 1.0])
    q_next = torch.tensor([5.0, -100.0, -10.0, -30.0])
    y = td_target(r, d, q_next, gamma)
    torch.testing.assert_close(y, torch.tensor([0.0, -1 / (1 - gamma), -1 - gamma * 10, 0.0]))


def test_the_actor_steps_on_the_critic_as_it_was_before_the_critic_step():
    """baselines' her/ddpg.py computes both gradients in one sess.run, then steps: the actor's gradient is taken at
    the old critic, not at the one the same update has just stepped (which gives a different actor here)."""
    import copy

    import her_ddpg

    torch.manual_seed(0)
    actor, critic = her_ddpg.Actor(4, 2, 2, [16], 1.0), her_ddpg.Critic(4, 2, 2, [16], 1.0)
    old_actor, old_critic = copy.deepcopy(actor), copy.deepcopy(critic)
    x = torch.randn(32, 6)
    batch = [x, torch.rand(32, 2) * 2 - 1, -torch.ones(32), torch.randn(32, 6), torch.zeros(32)]
    opts = [torch.optim.SGD(net.parameters(), lr=0.5) for net in (actor, critic)]
    her_ddpg.update(batch, actor, critic, copy.deepcopy(actor), copy.deepcopy(critic), *opts,
                    her_ddpg.Args(action_l2=0.0), 0.98, (-1.0, 0.0))

    def actor_after_a_step_on(q):
        grads = torch.autograd.grad(-q(x, old_actor(x)).mean(), list(old_actor.parameters()))
        return [p - 0.5 * gr for p, gr in zip(old_actor.parameters(), grads)]

    for p, expected in zip(actor.parameters(), actor_after_a_step_on(old_critic)):
        torch.testing.assert_close(p, expected)
    assert any(not torch.allclose(p, q) for p, q in zip(actor.parameters(), actor_after_a_step_on(critic)))


def test_normalizer_standardises_then_clips():
    rng = np.random.default_rng(0)
    norm = Normalizer(3, eps=0.01, clip_obs=200.0, clip_range=5.0)
    x = rng.normal([1.0, -2.0, 0.0], [2.0, 0.5, 0.0], (10_000, 3))
    norm.update(x[:5000])
    norm.update(x[5000:])  # running statistics over two batches
    np.testing.assert_allclose(norm.mean, x.mean(0), atol=1e-5)
    np.testing.assert_allclose(norm.std[:2], x.std(0)[:2], rtol=1e-4)
    assert norm.std[2] == pytest.approx(0.01)  # a constant input gets the eps floor, not a division by 0
    out = norm(np.array([x.mean(0), [1e6, -1e6, 0.0]]))
    np.testing.assert_allclose(out[0, :2], 0, atol=1e-6)
    assert out.max() == 5.0 and out.min() == -5.0


# -- the script ----------------------------------------------------------------------------------------------------

TINY = ["--total-timesteps", "400", "--eval-interval", "200", "--n-batches", "5", "--hidden-dims", "32", "--batch-size", "32"]


def test_smoke_train_save_and_reload(run, tmp_path):
    stdout, ckpt = train_save_and_reload(run, tmp_path, ["her_ddpg.py"], "Point2D", *TINY, n_test=4)
    assert len(eval_lines(stdout)) == 2
    saved = torch.load(ckpt, weights_only=False)
    assert {"actor", "o_norm", "g_norm", "args"} <= set(saved) and saved["o_norm"]["count"] > 0


SMOKE_ENVS = ["FetchReach", "FetchPush", "FetchPickAndPlace", "FetchSlide", "HandReach", "ContinuousSeek:d=20",
              "Point2DFourRoom", "FourRooms", "Navigation:k=5", "GoalReacher"]
BAD_INPUT = [(["--env", "BitFlip"], "continuous Box action space"), (["--env", "Pendulum-v1"], "not goal-conditioned"),
             (["--env", "FetchReech"], "did you mean FetchReach"), (["--env", "DriveSeek"], "cannot be relabelled"),
             (["--total-timesteps", "0"], "must be positive"), (["--random-eps", "2"], "[0, 1]"),
             (["--eval-checkpoint", "missing.pt"], "no checkpoint")]


def test_help_every_continuous_goal_env_and_bad_input(tmp_path):
    """--help is the manual; one tiny run per env family; one run per user mistake ends in one line. All in one
    Python process (see run_in_one_process)."""
    tiny = ["--total-timesteps", "100", "--num-envs", "2", "--n-batches", "2", "--n-test-rollouts", "2",
            "--hidden-dims", "16", "--batch-size", "16"]
    runs = [(tmp_path, ["her_ddpg.py", "--env", env, *tiny]) for env in SMOKE_ENVS]
    runs += [(tmp_path, ["her_ddpg.py", *args]) for args, _ in BAD_INPUT] + [(tmp_path, ["her_ddpg.py", "--help"])]
    outs = run_in_one_process(runs)
    assert outs[-1].returncode == 0 and "--replay-k" in outs[-1].stdout and "relabel" in outs[-1].stdout
    for env, out in zip(SMOKE_ENVS, outs):
        assert out.returncode == 0, (env, out.stderr)
        assert len(eval_lines(out.stdout)) == 1 and re.search(r"success \d\.\d\d", out.stdout), (env, out.stdout)
    for (args, message), out in zip(BAD_INPUT, outs[len(SMOKE_ENVS):]):
        assert_one_line_error(out, message)


def test_env_and_torch_threads_change_the_speed_not_the_run(tmp_path):
    """FetchPush with its default 2 env threads and 2 torch threads for the updates, and with 1 of each: the same
    normaliser statistics (every observation) and the same trained actor, bit for bit. Batch 512 on 256-wide layers,
    so the updates' matrix products are large enough to be split over the two threads."""
    tiny = ["--env", "FetchPush", "--total-timesteps", "400", "--num-envs", "4", "--n-batches", "3", "--batch-size",
            "512", "--hidden-dims", "256", "256", "--n-test-rollouts", "4", "--save-model"]
    dirs = [tmp_path / "threads1", tmp_path / "threads2"]
    for d in dirs:
        d.mkdir()
    outs = run_in_one_process([(dirs[0], ["her_ddpg.py", *tiny, "--env-threads", "1", "--torch-threads", "1"]),
                               (dirs[1], ["her_ddpg.py", *tiny])])
    assert all(out.returncode == 0 for out in outs), [out.stderr for out in outs]
    one, two = (torch.load(glob.glob(str(d / "runs" / "*" / "her_ddpg.pt"))[0]) for d in dirs)
    assert (one["args"]["env_threads"], one["args"]["torch_threads"]) == (1, 1)
    assert (two["args"]["env_threads"], two["args"]["torch_threads"]) == (2, 2)
    assert int(one["o_norm"]["count"]) == int(two["o_norm"]["count"]) > 0
    for a, b in ((one["o_norm"], two["o_norm"]), (one["g_norm"], two["g_norm"]), (one["actor"], two["actor"])):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_updates_run_on_torch_threads_and_everything_else_on_one(tmp_path, monkeypatch):
    """FetchPush's default: the burst of updates on 2 torch threads, collection and evaluation on 1 (an idle torch
    thread would spin on the core MuJoCo's second thread needs)."""
    import her_ddpg

    seen = {"update": set(), "rollout": set()}
    for name in seen:
        def record(*args, _f=getattr(her_ddpg, name), _name=name, **kwargs):
            seen[_name].add(torch.get_num_threads())
            return _f(*args, **kwargs)
        monkeypatch.setattr(her_ddpg, name, record)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        her_ddpg.main(her_ddpg.Args(env="FetchPush", total_timesteps=400, num_envs=4, n_batches=2, batch_size=32,
                                    hidden_dims=[16], n_test_rollouts=4))
    finally:
        torch.set_num_threads(threads)
    assert seen == {"update": {2}, "rollout": {1}}


def test_learns_point2d_and_relabeling_is_what_makes_it_learn(run):
    """6k env steps (60 episodes): HER reaches >= 0.5 success (seeds 1-3 gave 0.72, 0.90, 0.68); without
    relabeling the same budget stays near chance (0.04)."""
    args = ["--env", "Point2D", "--total-timesteps", "6000", "--eval-interval", "1000", "--hidden-dims", "64", "64", "64",
            "--n-batches", "20", "--n-test-rollouts", "50", "--seed", "1"]
    her = run("her_ddpg.py", *args)
    none = run("her_ddpg.py", *args, "--replay-strategy", "none")
    assert final_success(her.stdout) >= 0.5, her.stdout
    assert final_success(none.stdout) <= 0.2, none.stdout


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_default_fetch_reach_demo_is_solved_in_5k_steps(run, seed):
    out = run("her_ddpg.py", "--env", "FetchReach", "--seed", str(seed), timeout=600)
    assert out.returncode == 0, out.stderr
    assert "step     5000" in out.stdout and final_success(out.stdout) >= 0.95, out.stdout


# -- rewards --------------------------------------------------------------------------------------------------------

def test_target_clip_follows_a_zero_one_reward():
    """With r in {0, 1} (PointMaze, AntMaze) returns lie in [0, 1/(1-gamma)]: the -1/0 clip would flatten them all."""
    gamma = 0.9
    r, d = torch.tensor([1.0, 0.0, 0.0]), torch.zeros(3)
    y = td_target(r, d, torch.tensor([5.0, -3.0, 50.0]), gamma, rewards=envs.sparse_rewards(envs.make("PointMaze_UMaze-v3")))
    torch.testing.assert_close(y, torch.tensor([1 + gamma * 5, 0.0, 1 / (1 - gamma)]))


def test_a_dense_reward_is_refused_in_one_line(run):
    assert_one_line_error(run("her_ddpg.py", "--env", "FetchReachDense-v4"), "dense or unknown reward")


# -- workers (torchrun) ---------------------------------------------------------------------------------------------

def _worker(rank, world, rendezvous, results):
    """One torchrun-like worker: identical start (broadcast), own data, averaged gradients, summed normaliser."""
    import torch.distributed as dist

    import her_ddpg

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)  # different initial weights on purpose: the broadcast must make them equal
    args = her_ddpg.Args(hidden_dims=[16])
    nets = [her_ddpg.Actor(4, 2, 2, [16], 1.0), her_ddpg.Critic(4, 2, 2, [16], 1.0)]
    for p in [*nets[0].parameters(), *nets[1].parameters()]:
        dist.broadcast(p.data, 0)
    targets = [her_ddpg.Actor(4, 2, 2, [16], 1.0), her_ddpg.Critic(4, 2, 2, [16], 1.0)]
    opts = [torch.optim.Adam(n.parameters(), 1e-3) for n in nets]
    rng = np.random.default_rng(rank)
    norm = her_ddpg.Normalizer(3)
    seen = []
    for _ in range(5):
        x = rng.normal(rank, 1 + rank, (7 + rank, 3))
        norm.update(x)
        seen.append(x)
        batch = [torch.randn(8, 6), torch.rand(8, 2), -torch.ones(8), torch.randn(8, 6), torch.zeros(8)]
        her_ddpg.update(batch, nets[0], nets[1], targets[0], targets[1], opts[0], opts[1], args, 0.98, (-1.0, 0.0))
    flat = torch.cat([p.detach().reshape(-1) for n in nets for p in n.parameters()])
    results[rank] = (flat.numpy(), np.concatenate(seen), norm.sum, norm.sumsq, norm.count)
    dist.destroy_process_group()


def test_workers_stay_identical_and_normaliser_sums_every_workers_data(tmp_path):
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "rdzv"), results), nprocs=2)
    (p0, x0, sum0, sumsq0, n0), (p1, x1, sum1, sumsq1, n1) = results[0], results[1]
    np.testing.assert_array_equal(p0, p1)  # after 5 averaged steps the workers' weights are bit-identical
    everything = np.concatenate([x0, x1])
    assert n0 == n1 == len(everything)
    np.testing.assert_allclose(sum0, everything.sum(0))
    np.testing.assert_allclose(sumsq1, np.square(everything).sum(0))


def _grad_worker(rank, world, rendezvous, results):
    import torch.distributed as dist

    import her_ddpg

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    net = torch.nn.Linear(3, 2)
    for p in net.parameters():
        p.grad = torch.full_like(p, float(rank + 1)) * torch.arange(p.numel()).view_as(p)
    her_ddpg.average_gradients(net)
    results[rank] = [p.grad.clone().numpy() for p in net.parameters()]
    dist.destroy_process_group()


def test_averaged_gradient_is_the_mean_of_the_workers_gradients(tmp_path):
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_grad_worker, args=(3, str(tmp_path / "rdzv"), results), nprocs=3)
    for rank in range(3):
        for g in results[rank]:
            np.testing.assert_allclose(g, np.arange(g.size).reshape(g.shape) * (1 + 2 + 3) / 3)
