"""reengage_dqn.py: the soft target (its tau -> 0 limit, its goal-gradient against finite differences), the three
--target uses, alpha = 0 as DQN + HER, then learning and the script as a user runs it."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_one_line_error, final_success, train_save_and_reload
from reengage_dqn import Args, EpisodeBuffer, QNetwork, main, reengage_dqn_loss, select_action, soft_value

BITS, N_ACT, B, GAMMA = 5, 5, 32, 0.98


@pytest.fixture
def nets():
    torch.manual_seed(0)
    q_net = QNetwork(BITS, BITS, N_ACT, [32, 32]).double()
    q_target = copy.deepcopy(q_net)
    with torch.no_grad():  # a target that differs from the online network
        for p in q_target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return q_net, q_target


def batch(seed=0):
    rng = np.random.default_rng(seed)
    o, o2, g = (torch.tensor(rng.integers(0, 2, (B, BITS)), dtype=torch.float64) for _ in range(3))
    r = torch.tensor(np.where(rng.random(B) < 0.6, -1.0, 0.0))
    return o, torch.tensor(rng.integers(0, N_ACT, B)), r, o2, g, (r == 0).double()


def loss(b, nets, **kw):
    return reengage_dqn_loss(*b, *nets, GAMMA, Args(**{"alpha": 0.5, "tau": 0.5, **kw}))


def test_soft_target_tends_to_the_dqn_target_as_tau_goes_to_zero():
    q = torch.randn(64, 10, dtype=torch.float64)
    q[torch.arange(64), q.argmax(-1)] += 0.1  # a margin of >= 0.1 to the runner-up: exp(-0.1 / 1e-3) is below 1e-40
    hard = q.max(-1).values
    gaps = [(hard - soft_value(q, tau)).abs().max().item() for tau in (1.0, 0.1, 0.01, 1e-3)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-6  # shrinks to 0 as tau -> 0
    assert (soft_value(q, 1.0) <= hard).all() and torch.equal(soft_value(q, 0.0), hard)
    torch.testing.assert_close(soft_value(q, 1e9), q.mean(-1))  # and to the mean as tau -> infinity


def grad_match_by_hand(b, nets, tau):
    """The gradient term from central finite differences of Q_a and the soft target in each goal bit (float64)."""
    o, a, r, o2, g, d = b
    q_net, q_target = nets
    q_at = lambda gg: q_net(torch.cat([o, gg], -1)).gather(-1, a[:, None]).squeeze(-1)  # noqa: E731
    y_at = lambda gg: r + GAMMA * (1 - d) * (torch.softmax(q_target(torch.cat([o2, gg], -1)) / tau, -1)  # noqa
                                             * q_target(torch.cat([o2, gg], -1))).sum(-1)
    h, steps = 1e-6, 1e-6 * torch.eye(BITS, dtype=torch.float64)
    grad_q = torch.stack([(q_at(g + e) - q_at(g - e)) / (2 * h) for e in steps], -1)
    grad_y = torch.stack([(y_at(g + e) - y_at(g - e)) / (2 * h) for e in steps], -1)
    return ((r == -1).double().unsqueeze(-1) * (grad_q - grad_y) ** 2).mean()


@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_grad_term_matches_finite_differences_of_the_soft_target(nets, tau):
    b = batch()
    with torch.no_grad():
        expected = grad_match_by_hand(b, nets, tau)
    _, _, grad_match, _ = loss(b, nets, tau=tau)
    assert expected > 0
    torch.testing.assert_close(grad_match, expected, rtol=1e-5, atol=1e-9)


def test_rows_with_reward_zero_contribute_nothing(nets):
    o, a, r, o2, g, d = batch(1)
    _, _, full, _ = loss((o, a, r, o2, g, d), nets)
    fail = r == -1
    _, _, only_fail, _ = loss((o[fail], a[fail], r[fail], o2[fail], g[fail], d[fail]), nets)
    torch.testing.assert_close(full, only_fail * fail.double().mean())  # masked rows add 0 but count in the mean


def dqn_her_loss(b, nets):
    """Huber(Q_a(s, g), r + gamma (1 - d) max_a Q'_a(s', g)): the baseline, written out."""
    o, a, r, o2, g, d = b
    q_net, q_target = nets
    with torch.no_grad():
        y = r + GAMMA * (1 - d) * q_target(torch.cat([o2, g], -1)).max(-1).values
    return F.smooth_l1_loss(q_net(torch.cat([o, g], -1)).gather(-1, a[:, None]).squeeze(-1), y)


def test_alpha_zero_is_exactly_dqn_her(nets):
    b = batch(2)
    total, td, grad_match, _ = loss(b, nets, alpha=0.0)
    assert torch.equal(total, dqn_her_loss(b, nets)) and grad_match == 0
    total.backward()
    ours = [p.grad.clone() for p in nets[0].parameters()]
    nets[0].zero_grad()
    dqn_her_loss(b, nets).backward()
    assert all(torch.equal(x, p.grad) for x, p in zip(ours, nets[0].parameters()))


def test_gradient_loss_only_keeps_the_dqn_target_and_both_uses_the_soft_one(nets):
    b = batch(3)
    _, td_grad, _, _ = loss(b, nets, target="grad")
    _, td_both, _, _ = loss(b, nets, target="both")
    assert torch.equal(td_grad, dqn_her_loss(b, nets))  # Eq. (32): Huber against the hard max
    o, a, r, o2, g, d = b
    with torch.no_grad():
        y_soft = r + GAMMA * (1 - d) * soft_value(nets[1](torch.cat([o2, g], -1)), 0.5)
        expected = F.smooth_l1_loss(nets[0](torch.cat([o, g], -1)).gather(-1, a[:, None]).squeeze(-1), y_soft)
    torch.testing.assert_close(td_both, expected)  # Eq. (33): Huber against the soft target
    assert not torch.isclose(td_both, td_grad)


def test_boltzmann_collection_samples_softmax_of_q_over_tau():
    q_net = QNetwork(1, 1, 3, [])
    with torch.no_grad():
        q_net.net[0].weight.zero_()
        q_net.net[0].bias.copy_(torch.tensor([0.0, 0.5, 1.0]))
    x, rng = torch.zeros(20000, 2), np.random.default_rng(0)
    a = select_action(q_net, x, True, Args(target="boltzmann", tau=0.5), rng)
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), -1).numpy()
    np.testing.assert_allclose(np.bincount(a, minlength=3) / len(a), expected, atol=0.015)
    assert (select_action(q_net, x[:5], False, Args(target="boltzmann"), rng) == 2).all()  # evaluation: greedy


def test_learns_eight_bit_flipping(tmp_path, monkeypatch):
    """The demo's recipe on 8 bits within 4k env steps; without relabeling (or with a broken loss) it stays low."""
    monkeypatch.chdir(tmp_path)
    sr = main(Args(env="BitFlip:n=8", total_timesteps=4_000, eval_interval=4_000, n_test_rollouts=50))
    assert sr >= 0.9


def test_trains_saves_and_reloads_a_checkpoint(run, tmp_path):
    stdout, _ = train_save_and_reload(run, tmp_path, ["reengage_dqn.py"], "BitFlip:n=4", "--total-timesteps", "200",
                                      "--eval-interval", "100", "--num-envs", "4", "--n-batches", "2",
                                      "--hidden-dims", "16")
    assert 0.0 <= final_success(stdout) <= 1.0 and "reengage_dqn done" in stdout.splitlines()[-1]


def test_continuous_actions_are_refused_in_one_line(run):
    assert_one_line_error(run("reengage_dqn.py", "--env", "ContinuousSeek:d=2"), "needs Discrete actions")


def test_sampling_is_uniform_over_transitions_not_episodes():
    """HER samples transitions: an episode of 8 steps is drawn 8x as often as one that succeeded after 1 step."""
    import envs

    env = envs.make("BitFlip:n=8")
    buffer = EpisodeBuffer(80, 8, 8, 8, env.unwrapped, "future", 4, np.random.default_rng(0))
    obs = np.zeros((2, 9, 8))
    obs[1, :, 0] = 1.0  # marks the long episode in its observations
    buffer.store(obs, np.zeros((2, 9, 8)), np.zeros((2, 8, 8)), np.zeros((2, 8), np.int64), np.array([1, 8]))
    share_long = buffer.sample(20_000).obs[:, 0].mean()
    assert abs(share_long - 8 / 9) < 0.01, share_long  # uniform over episodes would give 1/2
