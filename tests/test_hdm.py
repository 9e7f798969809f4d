"""hdm.py: the self-supervised reward and the relabeling ratios, the reward conventions, the gate, the gated
cross-entropy, what each --algo trains; then the script as a user runs it."""

import glob
import math
import re
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs
import hdm
from conftest import assert_one_line_error, eval_lines, final_success, indexed_episodes
from hdm import Args, EpisodeBuffer, QNetwork, algo_rewards, check_env, hdm_loss, log_pi, make_env, q_of, \
    seed_streams, select_action, soft_value, td_target

T = 10


@pytest.fixture
def main(tmp_path, monkeypatch, capsys):
    """main("--env", ...): hdm.py's main() in this process, from tmp_path; returns what it printed."""
    monkeypatch.chdir(tmp_path)

    def run_main(*argv):
        capsys.readouterr()
        hdm.main(tyro.cli(hdm.Args, args=list(argv)))
        return capsys.readouterr().out

    return run_main


def indexed_buffer(n_episodes=200, seed=0, ep_len=None, future_p=0.85, next_state_p=0.2, **kwargs):
    """Episodes whose observation and achieved goal at step t of episode e are (e, t), desired goal (-1, -1)."""
    buf = EpisodeBuffer(n_episodes * T, T, 2, 2, 1, np.random.default_rng(seed), future_p, next_state_p, **kwargs)
    obs, ag, g, actions, lengths = indexed_episodes(n_episodes, T, ep_len)
    buf.store(obs, ag, g, actions.astype(np.int64), lengths)
    return buf


def test_reward_is_0_exactly_on_next_state_relabels():
    lengths = np.random.default_rng(1).integers(1, T + 1, 200)
    b = indexed_buffer(ep_len=lengths).sample(50_000)
    e, t, g = b.obs[:, 0], b.obs[:, 1], b.g
    next_state = (g[:, 0] == e) & (g[:, 1] == t + 1)
    np.testing.assert_array_equal(b.rewards == 0, next_state)  # by index: the goal IS s_{t+1}
    assert set(np.unique(b.rewards)) == {-1.0, 0.0} and (b.dones == 0).all()  # no terminal states
    assert ((g[:, 0] == e) | (g[:, 0] == -1)).all()  # relabelled from the same episode, or the original goal
    g_bc = b.g_bc
    assert (g_bc[:, 0] == e).all() and (g_bc[:, 1] > t).all() and (g_bc[:, 1] <= lengths[e.astype(int)]).all()


def test_relabelling_and_next_state_ratios():
    b = indexed_buffer().sample(100_000)
    relabelled = b.g[:, 0] >= 0
    assert abs(relabelled.mean() - 0.85) < 0.01
    k0 = b.g_bc[:, 1] == b.obs[:, 1] + 1
    expected = 0.2 + 0.8 * np.mean([1 / (T - t) for t in range(T)])  # next_state_p, plus k = 0 by chance
    assert abs(k0.mean() - expected) < 0.01
    assert abs((b.rewards == 0).mean() - 0.85 * expected) < 0.01


# -- reward conventions ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("env_name,convention", [("PointMaze_UMaze-v3", (0.0, 1.0)), ("FourRooms", (-1.0, 0.0))])
def test_threshold_success_test_reads_either_env_reward_convention(env_name, convention):
    env = make_env(Args(env=env_name))
    assert envs.sparse_rewards(env) == convention
    reached = check_env(env, Args(env=env_name, reward="threshold"))
    ag = np.random.default_rng(0).uniform(-0.5, 0.5, (64, env.observation_space["desired_goal"].shape[0]))
    assert reached(ag, ag).all() and not reached(ag, ag + 10.0).any()


def test_threshold_rewards_are_the_methods_convention_whatever_the_envs():
    """--reward threshold: the env only says which goals are reached; the method's own rewards are stored."""
    def same(ag, g):
        return (ag == g).all(-1)

    for algo, (r_fail, r_success) in [("her", (-1.0, 0.0)), ("hdm", (-1.0, 0.0)), ("her01", (0.0, 1.0))]:
        b = indexed_buffer(rewards=algo_rewards(algo), reached=same).sample(20_000)
        np.testing.assert_array_equal(b.rewards, np.where(same(b.next_obs, b.g), r_success, r_fail))
        assert set(np.unique(b.rewards)) == {r_fail, r_success}


def test_threshold_successes_are_terminal_only_on_tasks_that_end_there():
    """--reward threshold on a task that ends on success (Navigation): d = 1 there, so y = r, no bootstrap."""
    def same(ag, g):
        return (ag == g).all(-1)

    b = indexed_buffer(reached=same, terminal=True).sample(5_000)
    success = same(b.next_obs, b.g)
    assert success.any() and not success.all()
    np.testing.assert_array_equal(b.dones, success.astype(np.float32))
    assert (indexed_buffer(reached=same).sample(5_000).dones == 0).all()  # tasks that go on: no terminal states
    r, q_next, d = torch.tensor([0.0, -1.0]), torch.tensor([-5.0, -5.0]), torch.tensor([1.0, 0.0])
    torch.testing.assert_close(td_target(r, q_next, 0.9, d=d), torch.tensor([0.0, -1 - 0.9 * 5]))


def test_td_target_clip_bounds_follow_the_methods_reward_convention():
    gamma, q_next = 0.9, torch.tensor([5.0, -3.0, 50.0, -100.0])
    r = torch.tensor([0.0, -1.0, 0.0, -1.0])
    y = td_target(r, q_next, gamma, (-1.0, 0.0))  # (-1, 0): returns <= 0; only the top is clipped (authors' code)
    torch.testing.assert_close(y, torch.tensor([0.0, -1 - gamma * 3, 0.0, -1 - gamma * 100]))
    y01 = td_target(r + 1, q_next, gamma, (0.0, 1.0))  # (0, 1): returns in [0, 1/(1 - gamma)]
    torch.testing.assert_close(y01, torch.tensor([1 + gamma * 5, 0.0, 1 / (1 - gamma), 0.0]))
    torch.testing.assert_close(td_target(r, q_next, gamma, (-1.0, 0.0), clip=False), r + gamma * q_next)


def test_a_dense_reward_is_refused_when_threshold_reads_it_and_ignored_otherwise(main):
    with pytest.raises(envs.EnvError, match="dense or unknown reward"):
        main("--env", "FetchReachDense-v4", "--reward", "threshold")
    assert "hdm done" in main("--env", "FetchReachDense-v4", "--total-timesteps", "50", "--n-test-rollouts", "1")


# -- the losses ------------------------------------------------------------------------------------------------------

class TableQ(torch.nn.Module):
    """A stand-in Q-network: the input's first coordinate indexes a row of a fixed table of Q-values [rows, 1, |A|]."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.as_tensor(table, dtype=torch.float32))

    def forward(self, x):
        return self.table[x[:, 0].long()]


ARGS = SimpleNamespace(gamma=0.98, gamma_hdm=0.85, beta=1.0, sql_tau=0.2, clip_target=True)


def hand_made_batch():
    """Rows 0-3 are states s, rows 4-7 their next states s'; actions 0, 1, 2, 0."""
    table = [[[-1.0, -3.0, -2.0]], [[-4.0, -2.0, -5.0]], [[-1.0, -1.0, -0.5]], [[-6.0, -6.0, -6.0]],
             [[-0.5, -2.0, -2.0]], [[-3.0, -1.5, -2.5]], [[-3.0, -0.1, -0.2]], [[-4.5, -9.0, -9.0]]]
    x, x2 = torch.tensor([[0.0], [1.0], [2.0], [3.0]]), torch.tensor([[4.0], [5.0], [6.0], [7.0]])
    a, r = torch.tensor([[0], [1], [2], [0]]), torch.tensor([-1.0, 0.0, -1.0, -1.0])
    return TableQ(table), x, a, r, x2


def test_gate_is_the_indicator_q_minus_max_next_q_below_ln_gamma_hdm():
    q_net, x, a, r, x2 = hand_made_batch()
    # Q(s, a) - max Q(s', .) = -1 - (-0.5), -2 - (-1.5), -0.5 - (-0.1), -6 - (-4.5) = -0.5, -0.5, -0.4, -1.5
    gate = np.array([-0.5, -0.5, -0.4, -1.5]) < math.log(0.85)  # ln 0.85 = -0.1625: all on
    _, stats = hdm_loss(q_net, q_net, x, a, r, x2, x, SimpleNamespace(**vars(ARGS), algo="hdm"))
    assert stats["gate_fraction"] == pytest.approx(gate.mean())
    _, stats = hdm_loss(q_net, q_net, x, a, r, x2, x, SimpleNamespace(**{**vars(ARGS), "gamma_hdm": 0.6}, algo="hdm"))
    assert stats["gate_fraction"] == pytest.approx(0.25)  # ln 0.6 = -0.51: only row 3 (-1.5) passes


def test_bc_term_is_cross_entropy_of_softmax_q_on_gated_rows_only():
    q_net, x, a, r, x2 = hand_made_batch()
    args = SimpleNamespace(**{**vars(ARGS), "gamma_hdm": 0.6}, algo="hdm")  # gate on row 3 only
    _, stats = hdm_loss(q_net, q_net, x, a, r, x2, x, args)
    log_softmax_row3 = -6.0 - math.log(3 * math.exp(-6.0))  # uniform Q-values: log(1/3)
    assert stats["bc_loss"] == pytest.approx(-log_softmax_row3 / 4)  # mean over the whole batch of 4
    args.beta, args.algo = 1.0, "her"
    td_only, _ = hdm_loss(q_net, q_net, x, a, r, x2, x, args)
    args.algo = "hdm"
    loss, _ = hdm_loss(q_net, q_net, x, a, r, x2, x, args)
    grad_bc = torch.autograd.grad(loss - td_only, q_net.table)[0]
    assert (grad_bc[:3] == 0).all() and (grad_bc[3] != 0).all()  # only the gated state's logits move
    torch.testing.assert_close(grad_bc[3, 0], (torch.softmax(q_net.table[3, 0], -1) - torch.eye(3)[0]).detach() / 4)


def test_each_algo_trains_the_terms_of_its_table_1_row():
    q_net, x, a, r, x2 = hand_made_batch()
    x_bc = torch.tensor([[7.0], [6.0], [5.0], [4.0]])

    def run(algo):
        return hdm_loss(q_net, q_net, x, a, r, x2, x_bc, SimpleNamespace(**vars(ARGS), algo=algo))

    loss, stats = run("gcsl")  # cross-entropy on the hindsight goals g_bc only: no TD term
    assert set(stats) == {"bc_loss"} and loss.item() == pytest.approx(-log_pi(q_net(x_bc), a).mean().item())
    assert set(run("her")[1]) == {"td_loss", "q_values"}
    assert run("her_hbc")[1]["gate_fraction"] == 1.0  # HER + HBC imitates every row
    assert "gate_fraction" in run("hdm")[1]
    # double DQN with the clip at 0: the online net picks a' = argmax Q(s', .), the target values it
    q_sa, q2 = q_of(q_net(x), a), q_net(x2)
    y = (r + 0.98 * q2.max(-1).values.sum(1)).clamp(max=0)
    assert run("her")[0].item() == pytest.approx((q_sa - y).pow(2).mean().item())
    y01 = (r + 1 + 0.98 * q2.max(-1).values.sum(1)).clamp(0, 50)  # (0, 1) rewards: the return lies in [0, 1/(1-gamma)]
    loss01, _ = hdm_loss(q_net, q_net, x, a, r + 1, x2, x_bc, SimpleNamespace(**vars(ARGS), algo="her01"))
    assert loss01.item() == pytest.approx((q_sa - y01).pow(2).mean().item())
    y_sql = (r + 0.98 * soft_value(q2, 0.2)).clamp(max=0)  # the soft backup: tau (logsumexp(Q/tau) - ln |A|)
    assert run("her_sql")[0].item() == pytest.approx((q_sa - y_sql).pow(2).mean().item())
    # --no-clip-target (the authors' Four Rooms setting): the same double DQN target, free to rise above 0
    y_free = r + 2 + 0.98 * q2.max(-1).values.sum(1)
    assert (y_free > 0).any()
    no_clip = SimpleNamespace(**{**vars(ARGS), "clip_target": False}, algo="her")
    loss_free, _ = hdm_loss(q_net, q_net, x, a, r + 2, x2, x_bc, no_clip)
    assert loss_free.item() == pytest.approx((q_sa - y_free).pow(2).mean().item())


def test_collection_is_argmax_plus_epsilon_for_every_algo_and_softmax_on_request():
    """The authors' loop collects every run the same way: argmax with random_eps uniform actions (--collect softmax:
    a sample of softmax(Q), random_eps on top)."""
    q_net, x, rng = TableQ([[[0.0, 1.0, 0.5]]]), torch.zeros(20_000, 1), np.random.default_rng(0)
    for algo in ("hdm", "her", "her01", "her_sql", "her_hbc", "gcsl"):
        args = Args(algo=algo, random_eps=0.3)
        assert args.collect == "greedy"
        a = select_action(q_net, x, True, args, rng)[:, 0]
        assert abs((a != 1).mean() - 0.3 * 2 / 3) < 0.015  # epsilon picks one of the 3 actions uniformly
        assert (select_action(q_net, x, False, args, rng) == 1).all()  # evaluation: argmax
    a = select_action(q_net, x, True, Args(algo="gcsl", collect="softmax", random_eps=0.0), rng)[:, 0]
    np.testing.assert_allclose(np.bincount(a, minlength=3) / len(a), torch.softmax(q_net.table[0, 0], -1).detach(),
                               atol=0.015)


def test_softmax_sampler_never_falls_through_to_action_0():
    """softmax([0.3, 0, 0]) sums to 0.99999994 in float32: a draw above that must give the last action, not 0."""
    q_net = TableQ([[[0.3, 0.0, 0.0]]])
    assert torch.softmax(q_net.table, -1).cumsum(-1)[0, 0, -1].item() < 0.99999997

    class HighDraw:
        def random(self, shape):
            return np.full(shape, 0.99999997)

        def integers(self, low, high, shape):
            return np.zeros(shape, np.int64)

    a = select_action(q_net, torch.zeros(4, 1), True, Args(collect="softmax", random_eps=0.0), HighDraw())
    assert (a == 2).all()


def test_agent_and_env_resets_draw_independent_streams():
    """Gymnasium seeds an env's np_random as default_rng(seed) would, so one seed for both gives env 0 the agent's
    numbers; seed_streams spawns the two apart, reproducibly."""
    def env_draws(seed):  # what vec_env.reset(seed=seed) gives env 0
        return gym.utils.seeding.np_random(seed)[0].random(8)

    np.testing.assert_array_equal(env_draws(1), np.random.default_rng(1).random(8))
    rng, env_seed = seed_streams(1)
    assert not np.isin(rng.random(8), env_draws(env_seed)).any()
    rng_again, env_seed_again = seed_streams(1)
    assert env_seed_again == env_seed and rng_again.random() == seed_streams(1)[0].random()


def test_factorised_head_sums_over_action_dimensions():
    torch.manual_seed(0)
    net = QNetwork(4, dims=3, n=3, hidden_dims=[16])
    x, a = torch.randn(5, 4), torch.randint(0, 3, (5, 3))
    q = net(x)
    expected = sum(q[torch.arange(5), i, a[:, i]] for i in range(3))
    torch.testing.assert_close(q_of(q, a), expected)
    torch.testing.assert_close(log_pi(q, a), sum(torch.log_softmax(q[:, i], -1)[torch.arange(5), a[:, i]]
                                                 for i in range(3)))


# -- the script ----------------------------------------------------------------------------------------------------
# Most runs call main() in this process: the same code as the command line, without a fresh interpreter each time.

TINY = ["--total-timesteps", "300", "--random-episodes", "2", "--hidden-dims", "16", "16", "--batch-size", "16",
        "--eval-interval", "100", "--n-test-rollouts", "2"]


def test_help_is_the_manual(capsys):
    with pytest.raises(SystemExit) as done:  # tyro prints the same --help the command line does
        tyro.cli(hdm.Args, args=["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "--gamma-hdm" in out and "--algo" in out and "--collect" in out
    assert "--random-eps" in out and "--target-interval" in out and "--eps " not in out


def test_a_run_prints_the_header_one_line_per_evaluation_and_the_summary(main):
    lines = main("--env", "FourRooms", *TINY).strip().splitlines()
    assert re.fullmatch(r"hdm \| FourRooms-v0 \| 300 env steps \| seed 1 \| run runs/FourRooms__hdm_hdm__1__\d+ \| "
                        r"tensorboard --logdir runs", lines[0]), lines[0]
    # warm-up: 2 episodes = 100 steps, so the evaluations are at 200 and at the end (300)
    assert [line.split(" | success")[0] for line in eval_lines("\n".join(lines))] == ["step      200/300",
                                                                                   "step      300/300"]
    assert re.fullmatch(r"hdm done \| success \d\.\d\d \| 300 env steps \| 200 gradient steps \| \d+ s", lines[-1])
    acc = EventAccumulator(glob.glob("runs/*")[0])
    acc.Reload()
    ratios = [e.value for e in acc.Scalars("charts/ag_change")]  # one per training episode
    assert len(ratios) == 6 and set(ratios) <= {0.0, 1.0}  # one env: its last ag is off its first (1), or not (0)


def test_a_budget_below_the_warm_up_still_ends_with_an_evaluation_and_the_summary(main):
    out = main("--env", "FourRooms", "--total-timesteps", "100", "--random-episodes", "5", "--n-test-rollouts", "2",
               "--hidden-dims", "16")
    assert len(eval_lines(out)) == 1 and eval_lines(out)[0].startswith("step      100/100 | success")
    assert re.search(r"^hdm done \| success \d\.\d\d \| 100 env steps \| 0 gradient steps \| ", out, re.M)


@pytest.mark.parametrize("env,extra", [("FetchReach", []), ("BitFlip", []), ("FourRoomMaze", ["--algo", "gcsl"]),
                                       ("Point2DFourRoom", ["--algo", "her_sql"]),
                                       ("FourRooms", ["--head", "factorised"])])
def test_smoke_train_save_and_reload(main, tmp_path, env, extra):
    """In this process (the command line's own path, __main__, is covered by the one-line-error test)."""
    assert eval_lines(main("--env", env, "--save-model", *TINY, *extra))
    [ckpt] = glob.glob(str(tmp_path / "runs" / "*" / "hdm.pt"))
    assert glob.glob(str(tmp_path / "runs" / "*" / "events.out.tfevents.*"))
    saved = torch.load(ckpt, weights_only=True)  # tensors and plain types only
    assert saved["algo"] == "hdm" and {"q_net", "args"} <= set(saved)
    out = main("--eval-checkpoint", ckpt, "--n-test-rollouts", "3")
    assert re.fullmatch(rf"{env}: success rate \d\.\d+, mean return -?\d+\.\d+ over 3 episodes\n", out), out


@pytest.mark.parametrize("algo", ["her", "her01", "her_hbc"])
def test_smoke_other_methods(main, algo):
    assert "hdm done" in main("--env", "EmptyMaze", "--algo", algo, "--reward", "threshold", *TINY)


def test_threshold_reward_trains_on_a_zero_one_env(main):
    out = main("--env", "PointMaze_UMaze-v3", "--reward", "threshold", "--total-timesteps", "600", "--random-episodes",
               "1", "--eval-interval", "600", "--n-test-rollouts", "1", "--hidden-dims", "16", "--batch-size", "16")
    assert "| 300 gradient steps |" in out


@pytest.mark.parametrize("args,message", [(["--env", "DriveSeek"], "cannot be relabelled"),
                                          (["--eval-checkpoint", "missing.pt"], "no checkpoint"),
                                          (["--env", "FrankaKitchen-v1"], "relabels goals that are arrays"),
                                          (["--eval-interval", "0"], "must be positive"),
                                          (["--future-p", "2"], "[0, 1]"),
                                          (["--random-eps", "2"], "[0, 1]"),
                                          (["--gamma-hdm", "0"], "(0, 1]")])
def test_bad_input_is_refused(main, args, message):
    with pytest.raises(envs.EnvError, match=re.escape(message)):
        main(*args)


def test_bad_input_gets_a_one_line_error(run):
    assert_one_line_error(run("hdm.py", "--env", "Pendulum-v1"), "not goal-conditioned")


class _Malicious:
    """Unpickling this creates the file `path`: pickle calls open(path, "w")."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_file_that_is_not_a_checkpoint_is_refused_and_nothing_in_it_runs(main, tmp_path):
    garbage, evil, other = tmp_path / "garbage.pt", tmp_path / "evil.pt", tmp_path / "other.pt"
    marker = tmp_path / "marker"
    garbage.write_text("not a checkpoint\n")
    torch.save({"algo": "hdm", "q_net": _Malicious(str(marker))}, evil)  # a full load would run open()
    torch.save({"algo": "her_ddpg", "actor": {}, "args": {}}, other)  # another script's checkpoint
    for path in (garbage, evil, other):  # EnvError: the command line prints it as one line (test above)
        with pytest.raises(envs.EnvError, match=re.escape(f"{path} is not a hdm.py checkpoint")):
            main("--eval-checkpoint", str(path))
    assert not marker.exists()


def test_learns_bitflip_and_relabeling_is_what_makes_it_learn(main):
    """BitFlip n = 5, 1.5k env steps (1.4k gradient steps), 50 greedy test episodes: HDM reached 1.00 with seed 1;
    without relabelling (--future-p 0) no reward is ever 0, so nothing is learnt (0.02, the untrained level)."""
    args = ["--env", "BitFlip:n=5", "--total-timesteps", "1500", "--eval-interval", "1500", "--n-test-rollouts", "50",
            "--hidden-dims", "64", "64"]
    assert final_success(main(*args)) >= 0.7
    assert final_success(main(*args, "--future-p", "0")) <= 0.2


@pytest.mark.slow
def test_default_fetch_reach_demo_is_solved(run):
    out = run("hdm.py", "--env", "FetchReach", timeout=900)
    assert out.returncode == 0, out.stderr
    assert "step     6000/6000" in out.stdout and final_success(out.stdout) >= 0.9, out.stdout
