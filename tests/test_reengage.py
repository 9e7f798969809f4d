"""reengage.py: the goal-gradient term (finite differences, the target-actor path, the sparse mask, alpha = 0), then
the script as a user runs it."""

import copy
import glob

import numpy as np
import pytest
import torch

import her_ddpg
from conftest import assert_one_line_error, final_success, train_save_and_reload
from reengage import Actor, Critic, GaussianActor, Normalizer, TwinCritic, critic_loss_fn, sac_critic_loss_fn

OBS, GOAL, ACT, B, GAMMA = 4, 3, 2, 16, 0.95


@pytest.fixture
def nets():
    torch.manual_seed(0)
    actor, critic = Actor(OBS, GOAL, ACT, 32, 2, 1.0).double(), Critic(OBS, GOAL, ACT, 32, 2, 1.0).double()
    g_norm = Normalizer(GOAL)
    g_norm.update(np.random.default_rng(0).normal(0.5, 2.0, (100, GOAL)))
    return actor, critic, copy.deepcopy(actor), copy.deepcopy(critic), g_norm


def batch(seed=0):
    rng = np.random.default_rng(seed)
    o, o2 = torch.tensor(rng.normal(size=(B, OBS))), torch.tensor(rng.normal(size=(B, OBS)))
    a, g = torch.tensor(rng.uniform(-1, 1, (B, ACT))), torch.tensor(rng.normal(size=(B, GOAL)))
    r = torch.tensor(-(rng.random(B) < 0.6).astype(np.float64))
    return o, a, r, o2, g, torch.zeros(B, dtype=torch.float64)


def target_value(o2, g, actor_t, critic_t, g_norm, r, d):
    x2 = torch.cat([o2, g_norm.torch(g)], -1)
    return her_ddpg.td_target(r, d, critic_t(x2, actor_t(x2)), GAMMA)


def grad_match_by_hand(o, a, r, o2, g, d, critic, actor_t, critic_t, g_norm, block_actor=False):
    """The gradient term from finite differences of Q and y in each goal coordinate (float64, central, h = 1e-6)."""
    h, grads_q, grads_y = 1e-6, [], []
    for i in range(GOAL):
        e = torch.zeros(GOAL, dtype=torch.float64)
        e[i] = h
        q_at = lambda gg: critic(torch.cat([o, g_norm.torch(gg)], -1), a)
        grads_q.append((q_at(g + e) - q_at(g - e)) / (2 * h))
        if block_actor:  # the target actor sees the fixed goal; only Q''s goal input moves
            x2 = lambda gg: torch.cat([o2, g_norm.torch(gg)], -1)
            y_at = lambda gg: her_ddpg.td_target(r, d, critic_t(x2(gg), actor_t(x2(g))), GAMMA)
        else:
            y_at = lambda gg: target_value(o2, gg, actor_t, critic_t, g_norm, r, d)
        grads_y.append((y_at(g + e) - y_at(g - e)) / (2 * h))
    grad_q, grad_y = torch.stack(grads_q, -1), torch.stack(grads_y, -1)
    mask = (r == -1).double().unsqueeze(-1)
    return (mask * (grad_q - grad_y) ** 2).mean()


def test_grad_term_matches_finite_differences(nets):
    actor, critic, actor_t, critic_t, g_norm = nets
    o, a, r, o2, g, d = batch()
    with torch.no_grad():
        expected = grad_match_by_hand(o, a, r, o2, g, d, critic, actor_t, critic_t, g_norm)
    _, grad_match, _ = critic_loss_fn(o, a, r, o2, g, d, critic, actor_t, critic_t, g_norm, GAMMA, alpha=0.2)
    assert expected > 0
    torch.testing.assert_close(grad_match.detach(), expected, rtol=1e-5, atol=1e-9)


def test_target_gradient_includes_the_path_through_the_target_actor(nets):
    actor, critic, actor_t, critic_t, g_norm = nets
    o, a, r, o2, g, d = batch(1)
    with torch.no_grad():
        full = grad_match_by_hand(o, a, r, o2, g, d, critic, actor_t, critic_t, g_norm)
        blocked = grad_match_by_hand(o, a, r, o2, g, d, critic, actor_t, critic_t, g_norm, block_actor=True)
    _, grad_match, _ = critic_loss_fn(o, a, r, o2, g, d, critic, actor_t, critic_t, g_norm, GAMMA, alpha=0.2)
    assert abs(full - blocked) > 1e-3 * full  # the actor path matters here ...
    torch.testing.assert_close(grad_match.detach(), full, rtol=1e-5, atol=1e-9)  # ... and the code follows it


def test_rows_with_reward_zero_contribute_nothing(nets):
    actor, critic, actor_t, critic_t, g_norm = nets
    o, a, r, o2, g, d = batch(2)
    _, base, _ = critic_loss_fn(o, a, r, o2, g, d, critic, actor_t, critic_t, g_norm, GAMMA, alpha=0.2)
    success = r == 0
    assert success.any() and (~success).any()
    o_moved = o.clone()
    o_moved[success] += 3.0  # change every r = 0 row's state: their gradients change, the term must not
    _, moved, _ = critic_loss_fn(o_moved, a, r, o2, g, d, critic, actor_t, critic_t, g_norm, GAMMA, alpha=0.2)
    torch.testing.assert_close(moved, base)
    r_all_zero = torch.zeros_like(r)
    _, none, _ = critic_loss_fn(o, a, r_all_zero, o2, g, d, critic, actor_t, critic_t, g_norm, GAMMA, alpha=0.2)
    assert none.item() == 0.0


def test_alpha_zero_is_her_ddpg_critic_loss(nets):
    actor, critic, actor_t, critic_t, g_norm = nets
    o, a, r, o2, g, d = batch(3)
    loss, grad_match, q = critic_loss_fn(o, a, r, o2, g, d, critic, actor_t, critic_t, g_norm, GAMMA, alpha=0.0)
    x = torch.cat([o, torch.as_tensor(g_norm(g.numpy()), dtype=torch.float64)], -1)  # her_ddpg's numpy path
    x2 = torch.cat([o2, x[:, OBS:]], -1)
    with torch.no_grad():
        y = her_ddpg.td_target(r, d, critic_t(x2, actor_t(x2)), GAMMA)
    torch.testing.assert_close(loss, (critic(x, a) - y).pow(2).mean())
    assert grad_match.item() == 0.0


def test_grad_term_trains_the_critic(nets):
    """The term reaches the critic's weights through the double backward (create_graph)."""
    actor, critic, actor_t, critic_t, g_norm = nets
    o, a, r, o2, g, d = batch(4)
    _, grad_match, _ = critic_loss_fn(o, a, r, o2, g, d, critic, actor_t, critic_t, g_norm, GAMMA, alpha=0.2)
    grads = torch.autograd.grad(grad_match, list(critic.parameters()), allow_unused=True)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads)


def test_sac_target_gradient_flows_through_the_sampled_action_and_the_entropy_term():
    torch.manual_seed(0)
    actor = GaussianActor(OBS, GOAL, ACT, 32, 2, 1.0).double()
    critic, critic_t = TwinCritic(OBS, GOAL, ACT, 32, 2, 1.0).double(), TwinCritic(OBS, GOAL, ACT, 32, 2, 1.0).double()
    g_norm = Normalizer(GOAL)
    o, a, r, o2, g, d = batch(5)

    def y_at(gg, ent_coef):
        torch.manual_seed(1)  # the same reparameterisation noise at every evaluation
        x2 = torch.cat([o2, g_norm.torch(gg)], -1)
        a2, log_prob = actor.sample(x2)
        return r + GAMMA * (1 - d) * (critic_t(x2, a2).min(0).values - ent_coef * log_prob)

    def by_hand(ent_coef, h=1e-6):
        mask, total = (r == -1).double().unsqueeze(-1), 0.0
        grad_y = torch.stack([(y_at(g + h * e, ent_coef) - y_at(g - h * e, ent_coef)) / (2 * h)
                              for e in torch.eye(GOAL, dtype=torch.float64)], -1)
        for q_net in (critic.q1, critic.q2):
            q_at = lambda gg: q_net(torch.cat([o, g_norm.torch(gg)], -1), a)  # noqa: E731
            grad_q = torch.stack([(q_at(g + h * e) - q_at(g - h * e)) / (2 * h)
                                  for e in torch.eye(GOAL, dtype=torch.float64)], -1)
            total += 0.5 * (mask * (grad_q - grad_y) ** 2).mean()
        return total

    results = {}
    for ent_coef in (0.0, 0.5):
        with torch.no_grad():
            expected = by_hand(ent_coef)
        torch.manual_seed(1)
        _, grad_match, _ = sac_critic_loss_fn(o, a, r, o2, g, d, critic, critic_t, actor, ent_coef, g_norm, GAMMA, 0.2)
        torch.testing.assert_close(grad_match, expected, rtol=1e-5, atol=1e-9)
        results[ent_coef] = grad_match
    assert abs(results[0.5] - results[0.0]) > 1e-3 * results[0.0]  # the entropy term's gradient counts


# -- the script ----------------------------------------------------------------------------------------------------

def test_smoke_both_regimes_save_and_reload(run, tmp_path):
    train_save_and_reload(run, tmp_path, ["reengage.py", "seek"], "ContinuousSeek:d=3", "--total-timesteps", "300",
                          "--n-cycles", "10", "--learning-starts", "100", "--batch-size", "32", "--hidden-dim", "32",
                          "--n-test-rollouts", "5", n_test=4)
    out = run("reengage.py", "baselines", "--env", "FetchReach", "--total-timesteps", "100", "--n-cycles", "1",
              "--n-batches", "2", "--n-test-rollouts", "2", "--hidden-dim", "16", "--batch-size", "16")
    assert out.returncode == 0, out.stderr
    out = run("reengage.py", "baselines", "--env", "HandReach", "--sac", "--total-timesteps", "100", "--n-cycles", "1",
              "--n-batches", "2", "--n-test-rollouts", "2", "--hidden-dim", "16", "--batch-size", "16", "--save-model")
    assert out.returncode == 0, out.stderr
    ckpt = [c for c in glob.glob(str(tmp_path / "runs" / "HandReach*" / "reengage.pt"))][0]
    out = run("reengage.py", "baselines", "--eval-checkpoint", ckpt, "--n-test-rollouts", "2")
    assert out.returncode == 0 and "success rate" in out.stdout, out.stderr


def test_bad_input_gets_a_one_line_error(run):
    assert_one_line_error(run("reengage.py", "baselines", "--env", "BitFlip"), "continuous Box")


def test_learns_continuous_seek(run):
    """d = 3, 4000 env steps (3500 updates at batch 128), the seek regime: ReenGAGE reached 0.90 success here with
    seed 1 (1.00 with seed 2); an untrained or broken agent stays near 0 (random actions succeed on < 1% of goals)."""
    out = run("reengage.py", "seek", "--env", "ContinuousSeek:d=3", "--alpha", "0.2", "--total-timesteps", "4000",
              "--n-cycles", "100", "--batch-size", "128", "--hidden-dim", "64", "--learning-starts", "500")
    assert out.returncode == 0, out.stderr
    assert final_success(out.stdout) >= 0.6, out.stdout
