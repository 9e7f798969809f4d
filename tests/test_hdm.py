"""hdm.py: the self-supervised reward and the relabeling ratios, the gate, the gated cross-entropy, what each --algo
trains; then the script as a user runs it."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, final_success, indexed_episodes, train_save_and_reload
from hdm import EpisodeBuffer, QNetwork, hdm_loss, log_pi, q_of, soft_value

T = 10


def indexed_buffer(n_episodes=200, seed=0, ep_len=None):
    """Episodes whose observation and achieved goal at step t of episode e are (e, t), desired goal (-1, -1)."""
    buf = EpisodeBuffer(n_episodes * T, T, 2, 2, 1, np.random.default_rng(seed))
    obs, ag, g, actions, lengths = indexed_episodes(n_episodes, T, ep_len)
    buf.store(obs, ag, g, actions.astype(np.int64), lengths)
    return buf


def test_reward_is_0_exactly_on_next_state_relabels():
    lengths = np.random.default_rng(1).integers(1, T + 1, 200)
    o, _, _, _, g, pos, g_bc = indexed_buffer(ep_len=lengths).sample(50_000, future_p=0.85, next_state_p=0.2)
    e, t = o[:, 0], o[:, 1]
    next_state = (g[:, 0] == e) & (g[:, 1] == t + 1)
    np.testing.assert_array_equal(pos == 1, next_state)  # by index: the goal IS s_{t+1}
    assert ((g[:, 0] == e) | (g[:, 0] == -1)).all()  # relabelled from the same episode, or the original goal
    assert (g_bc[:, 0] == e).all() and (g_bc[:, 1] > t).all() and (g_bc[:, 1] <= lengths[e.astype(int)]).all()


def test_relabelling_and_next_state_ratios():
    o, _, _, _, g, pos, g_bc = indexed_buffer().sample(100_000, future_p=0.85, next_state_p=0.2)
    relabelled = g[:, 0] >= 0
    assert abs(relabelled.mean() - 0.85) < 0.01
    k0 = g_bc[:, 1] == o[:, 1] + 1
    expected = 0.2 + 0.8 * np.mean([1 / (T - t) for t in range(T)])  # next_state_p, plus k = 0 by chance
    assert abs(k0.mean() - expected) < 0.01
    assert abs(pos.mean() - 0.85 * expected) < 0.01


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

TINY = ["--total-timesteps", "300", "--random-episodes", "2", "--hidden-dims", "16", "16", "--batch-size", "16",
        "--eval-interval", "100", "--n-test-rollouts", "2"]


def test_help_is_the_manual(run):
    out = run("hdm.py", "--help")
    assert out.returncode == 0 and "--gamma-hdm" in out.stdout and "--algo" in out.stdout


@pytest.mark.parametrize("env,extra", [("FetchReach", []), ("FourRooms", ["--head", "factorised"]), ("BitFlip", []),
                                       ("FourRoomMaze", ["--algo", "gcsl"]),
                                       ("Point2DFourRoom", ["--algo", "her_sql"])])
def test_smoke_train_save_and_reload(run, tmp_path, env, extra):
    train_save_and_reload(run, tmp_path, ["hdm.py"], env, *TINY, *extra)


@pytest.mark.parametrize("algo", ["her", "her01", "her_hbc"])
def test_smoke_other_methods(run, algo):
    out = run("hdm.py", "--env", "EmptyMaze", "--algo", algo, "--reward", "threshold", *TINY)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("args,message", [(["--env", "DriveSeek"], "cannot be relabelled"),
                                          (["--env", "Pendulum-v1"], "not goal-conditioned"),
                                          (["--eval-interval", "0"], "must be positive"),
                                          (["--future-p", "2"], "[0, 1]"),
                                          (["--gamma-hdm", "0"], "(0, 1]"),
                                          (["--eval-checkpoint", "missing.pt"], "no checkpoint")])
def test_bad_input_gets_a_one_line_error(run, args, message):
    assert_one_line_error(run("hdm.py", *args), message)


def test_learns_bitflip_and_relabeling_is_what_makes_it_learn(run):
    """BitFlip n = 6, 3k env steps (2.9k gradient steps), 50 greedy test episodes: HDM reached 0.90 with seed 1;
    without relabelling (--future-p 0) no reward is ever 0, so nothing is learnt (0.08, the untrained level)."""
    args = ["--env", "BitFlip:n=6", "--total-timesteps", "3000", "--eval-interval", "3000", "--n-test-rollouts", "50"]
    hdm, none = run("hdm.py", *args), run("hdm.py", *args, "--future-p", "0")
    assert final_success(hdm.stdout) >= 0.7, hdm.stdout
    assert final_success(none.stdout) <= 0.2, none.stdout
