"""htrpo.py: relabelling and truncation, importance weights, QKL, conjugate gradient, the trust-region step, HGF, then
the script as a user runs it."""

import numpy as np
import pytest
import torch

import envs
from conftest import assert_one_line_error, final_success, train_save_and_reload
from htrpo import (Args, CategoricalPolicy, Normalizer, build_batch, conjugate_gradient, hgf, importance_weights,
                   relabel, trust_region_step)

BITS = envs.make("BitFlip:n=8,start=zeros").unwrapped


def bit_episode(flips, n=8):
    """Achieved goals [T+1, n] of an episode from all zeros that flips the given bits in order."""
    ag = np.zeros((len(flips) + 1, n), np.float32)
    for t, i in enumerate(flips):
        ag[t + 1] = ag[t]
        ag[t + 1, i] = 1 - ag[t + 1, i]
    return ag


def test_relabelled_episode_ends_at_the_first_success_with_the_bonus():
    """htrpo.md §8: T_max = 8, goal first hit after the 3rd action => L = 3, r' = (0, 0, 6), done' = (0, 0, 1)."""
    ag = bit_episode([0, 1, 2, 3, 4, 5, 6, 7])[None]
    goals = np.stack([ag[0, 3], ag[0, 1], np.full(8, 1.0) - np.eye(8)[0], ag[0, 5]])  # hit at 3, at 1, never, at 5
    valid, reward, done, keep = relabel(ag, np.array([8]), goals, BITS, 8)
    np.testing.assert_array_equal(valid[0, 0], [1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(reward[0, 0, :3], [0, 0, 6])
    np.testing.assert_array_equal(done[0, 0, :3], [0, 0, 1])
    assert not keep[0, 1] and not valid[0, 1].any()  # reached by the first action: dropped
    assert valid[0, 2].all() and (reward[0, 2] == 0).all() and done[0, 2, -1] == 1  # never reached: all 0, full length
    assert reward[0, 3, 4] == 8 - 5 + 1 and valid[0, 3].sum() == 5
    # the episode's own goal reproduces the env's own success step
    env = envs.make("BitFlip:n=8,start=zeros")
    ob, _ = env.reset(seed=0)
    flips = np.flatnonzero(ob["desired_goal"])
    for t, i in enumerate(flips):
        terminated = env.step(i)[2]
    assert terminated
    valid, *_ = relabel(bit_episode(list(flips))[None], np.array([len(flips)]), ob["desired_goal"][None], BITS, 8)
    assert valid[0, 0].sum() == len(flips) or len(flips) == 1


def test_weighted_is_sums_to_one_over_episodes_and_is_one_for_a_goal_blind_policy():
    rng = np.random.default_rng(0)
    N, M, T = 6, 5, 8
    valid = rng.random((N, M, T)) < 0.7
    valid = np.cumsum(~valid, 2) == 0  # prefixes, as truncation makes them
    logp_new, logp_orig = rng.normal(-1, 0.3, (N, M, T)), rng.normal(-1, 0.3, (N, T))
    w = importance_weights(logp_new, logp_orig, valid)
    has_any = valid.any(0)
    np.testing.assert_allclose(w.sum(0)[has_any], 1.0, rtol=1e-6)
    assert (w[~valid] == 0).all()
    # per decision: rho_t includes step t itself and every earlier step
    rho = importance_weights(logp_new, logp_orig, valid, weighted=False)
    i, j = np.argwhere(valid[:, :, 2])[0]
    np.testing.assert_allclose(rho[i, j, 2], np.exp((logp_new[i, j, :3] - logp_orig[i, :3]).sum()), rtol=1e-6)
    # a policy that ignores its goal: every ratio is 1, weights 1 / (episodes still valid at (j, t))
    same = np.broadcast_to(logp_orig[:, None], (N, M, T))
    w = importance_weights(same, logp_orig, valid)
    n_valid = np.broadcast_to(valid.sum(0, keepdims=True), w.shape)
    np.testing.assert_allclose(w[valid], 1 / n_valid[valid])


@pytest.fixture
def bitflip_batch():
    """A batch of 24 random-policy BitFlip episodes and a fresh policy and critic."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    args = Args(n_goals=0, hidden_dims=[32], gamma=0.9, cg_damping=1e-2)
    policy, critic = CategoricalPolicy(16, 8, [32]), torch.nn.Sequential(torch.nn.Linear(16, 1))
    N, T = 24, 8
    ag = np.zeros((N, T + 1, 8), np.float32)
    actions = rng.integers(0, 8, (N, T))
    g = rng.integers(0, 2, (N, 8)).astype(np.float32)
    ep_len = np.full(N, T)
    for i in range(N):
        for t in range(T):
            ag[i, t + 1] = ag[i, t]
            ag[i, t + 1, actions[i, t]] = 1 - ag[i, t, actions[i, t]]
            if (ag[i, t + 1] == g[i]).all():
                ep_len[i] = t + 1
                break
    x = torch.as_tensor(np.concatenate([ag[:, :-1], np.broadcast_to(g[:, None], (N, T, 8))], -1))
    with torch.no_grad():
        logp = policy.log_prob(x, torch.as_tensor(actions)).numpy()
    return ag, ag, g, actions.astype(np.float32), logp, ep_len, policy, critic, args, rng


def test_original_goal_only_gives_weights_one_and_trpos_objective(bitflip_batch):
    obs, ag, g, actions, logp, ep_len, policy, critic, args, rng = bitflip_batch
    args.algo = "trpo"
    norm = Normalizer(8, clip_range=np.inf)
    (x, a, logp_old, adv_w, kl_w), (x_v, target), stats = build_batch(obs, ag, g, actions, logp, ep_len, policy,
                                                                      critic, norm, norm, BITS, 8, 0.9, args, rng,
                                                                      "cpu")
    assert stats["samples"] == sum(ep_len[ep_len > 1])  # every step of every episode longer than one step
    # weights are 1: adv_w / (gamma^t A) and kl_w / ((1 - gamma) gamma^t / pairs) recover w = 1
    t = torch.as_tensor(np.concatenate([np.arange(L) for L in ep_len if L > 1]))
    v = critic(x).squeeze(-1).detach()
    adv = target - v
    adv = (adv - adv.mean()) / adv.std()
    torch.testing.assert_close(adv_w, 0.9**t * adv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kl_w, 0.1 / stats["pairs"] * 0.9**t.float(), rtol=1e-5, atol=1e-8)
    # at theta = theta~ the surrogate is the mean discounted advantage (all ratios 1): TRPO's objective
    ratio = torch.exp(policy.log_prob(x, a) - logp_old)
    torch.testing.assert_close(ratio, torch.ones_like(ratio))


def test_hindsight_batch_replays_every_episode_under_every_achieved_goal(bitflip_batch):
    obs, ag, g, actions, logp, ep_len, policy, critic, args, rng = bitflip_batch
    norm = Normalizer(8, clip_range=np.inf)
    _, _, stats = build_batch(obs, ag, g, actions, logp, ep_len, policy, critic, norm, norm, BITS, 8, 0.9, args, rng,
                              "cpu")
    achieved = np.unique(np.concatenate([ag[i, 1:ep_len[i] + 1] for i in range(len(ep_len))]), axis=0)
    assert stats["hindsight_goals"] == len(achieved)
    assert stats["pairs"] > len(ep_len) and 0 < stats["ess"] <= stats["samples"]


def test_qkl_approaches_the_exact_kl_for_small_policy_changes():
    """Prop. 1: E_{a ~ pi~}[1/2 (log pi~ - log pi)^2] = KL(pi~ || pi) + O(eta^3)."""
    torch.manual_seed(0)
    logits = torch.randn(50, 6, dtype=torch.float64)
    direction = torch.randn(50, 6, dtype=torch.float64)
    errors = []
    for eps in (1e-1, 1e-2, 1e-3):
        p_old, p_new = torch.softmax(logits, -1), torch.softmax(logits + eps * direction, -1)
        kl = (p_old * (p_old.log() - p_new.log())).sum(-1).mean()
        qkl = (p_old * 0.5 * (p_old.log() - p_new.log()) ** 2).sum(-1).mean()
        errors.append(abs(qkl / kl - 1).item())
    assert errors[2] < 2e-3 and errors[2] < errors[1] < errors[0]


def test_conjugate_gradient_solves_a_known_system():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(6, 6))
    A = torch.tensor(M @ M.T + 6 * np.eye(6))
    b = torch.tensor(rng.normal(size=6))
    x = conjugate_gradient(lambda v: A @ v, b, iters=10)
    torch.testing.assert_close(x, torch.linalg.solve(A, b))


def test_trust_region_step_stays_inside_the_region_and_improves(bitflip_batch):
    obs, ag, g, actions, logp, ep_len, policy, critic, args, rng = bitflip_batch
    norm = Normalizer(8, clip_range=np.inf)
    batch, _, _ = build_batch(obs, ag, g, actions, logp, ep_len, policy, critic, norm, norm, BITS, 8, 0.9, args, rng,
                              "cpu")
    before = [p.detach().clone() for p in policy.parameters()]
    args.fvp_subsample = 1.0
    K, frac, improvement, step_norm = trust_region_step(policy, batch, args, rng)
    assert frac > 0 and 0 < K < 1.5 * args.max_kl and improvement > 0 and step_norm > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.parameters()))


def test_hgf_keeps_goals_inside_the_real_goal_box_and_spreads_them():
    rng = np.random.default_rng(0)
    desired = rng.uniform(0, 1, (20, 3))
    desired[:, 2] = 0.4  # a constant dimension (the table height) is ignored
    inside = rng.uniform(0.1, 0.9, (30, 3))
    outside = rng.uniform(1.5, 2.5, (30, 3))
    candidates = np.concatenate([outside, inside])
    G = hgf(candidates, desired, 10, rng)
    assert len(np.unique(G, axis=0)) == 10
    assert ((G[:, :2] >= desired[:, :2].min(0)) & (G[:, :2] <= desired[:, :2].max(0))).all()
    # farthest-point order: the second pick is the pool point farthest from the first
    lo, hi = desired[:, :2].min(0), desired[:, :2].max(0)
    pool = candidates[((candidates[:, :2] >= lo) & (candidates[:, :2] <= hi)).all(1)]
    assert np.allclose(G[1], pool[np.argmax(np.linalg.norm(pool - G[0], axis=1))])
    # too few inside: top up with the outside candidates nearest the real goals' mean
    G = hgf(candidates[:35], desired, 10, rng)
    assert len(G) == 10 and sum(((g[:2] >= lo) & (g[:2] <= hi)).all() for g in G) == 5


def test_smoke_every_method_and_env_family(run, tmp_path):
    tiny = ["--total-timesteps", "160", "--steps-per-iter", "80", "--n-test-rollouts", "4", "--hidden-dims", "16"]
    train_save_and_reload(run, tmp_path, ["htrpo.py"], "BitFlip:n=4,start=zeros", *tiny, n_test=3)
    for args in (["--env", "FetchReach", "--n-goals", "5", "--no-qkl", "--dense"],
                 ["--env", "FetchReach", "--discrete", "3", "--algo", "hpg"],
                 ["--env", "FourRoomMaze", "--algo", "trpo", "--no-weighted-is"],
                 ["--env", "FetchPush", "--no-hgf", "--n-goals", "5"]):
        out = run("htrpo.py", *tiny, *args)
        assert out.returncode == 0 and "step" in out.stdout, (args, out.stderr)


@pytest.mark.parametrize("args,message", [(["--env", "DriveSeek"], "cannot be relabelled"),
                                          (["--env", "BitFlip", "--steps-per-iter", "0"], "--steps-per-iter"),
                                          (["--max-kl", "0"], "--max-kl"),
                                          (["--env", "FetchReach", "--discrete", "1"], "bins >= 2"),
                                          (["--eval-checkpoint", "nope.pt"], "no checkpoint at nope.pt")])
def test_bad_input_gets_a_one_line_error(run, args, message):
    assert_one_line_error(run("htrpo.py", *args), message)


def test_learns_bitflip_8_and_trpo_without_hindsight_does_not(run):
    """The demo: 8 bits from all zeros, 5k env steps (~20 s). Measured: HTRPO 1.00 from 3.2k steps; TRPO 0.00."""
    assert final_success(run("htrpo.py").stdout) >= 0.9
    assert final_success(run("htrpo.py", "--algo", "trpo").stdout) <= 0.2
