"""htrpo.py: relabelling and truncation under both reward conventions, importance weights, QKL, conjugate gradient, the
trust-region update, HGF and the per-env defaults; then the script as a user runs it."""

import glob
import pickle
import re

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from conftest import assert_one_line_error, eval_lines, final_success, train_save_and_reload
from htrpo import (Args, Episodes, Normalizer, Policy, build_batch, check_env, conjugate_gradient, fill_defaults, hgf,
                   importance_weights, load_checkpoint, make_env, relabel, update, update_normalizers)

BITS = envs.make("BitFlip:n=8,start=zeros").unwrapped


def bit_episode(flips, n=8):
    """Achieved goals [T+1, n] of an episode from all zeros that flips the given bits in order."""
    ag = np.zeros((len(flips) + 1, n), np.float32)
    for t, i in enumerate(flips):
        ag[t + 1] = ag[t]
        ag[t + 1, i] = 1 - ag[t + 1, i]
    return ag


# -- relabelling and rewards ------------------------------------------------------------------------------------------

def test_relabelled_episode_ends_at_the_first_success_with_the_bonus():
    """T_max = 8, goal first hit after the 3rd action => L = 3, r' = (0, 0, 6), done' = (0, 0, 1)."""
    ag = bit_episode([0, 1, 2, 3, 4, 5, 6, 7])[None]
    goals = np.stack([ag[0, 3], ag[0, 1], np.full(8, 1.0) - np.eye(8)[0], ag[0, 5]])  # hit at 3, at 1, never, at 5
    valid, reward, done, keep = relabel(ag, np.array([8]), goals, BITS, 8, 0.0)
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
    valid, *_ = relabel(bit_episode(list(flips))[None], np.array([len(flips)]), ob["desired_goal"][None], BITS, 8, 0.0)
    assert valid[0, 0].sum() == len(flips) or len(flips) == 1


class ZeroOneBits:
    """BitFlip's success test with the (0, 1) reward convention of PointMaze and AntMaze."""

    def compute_reward(self, ag, g, info):
        return BITS.compute_reward(ag, g, info) + 1


def test_relabel_finds_successes_under_both_reward_conventions():
    ag = bit_episode([0, 1, 2, 3, 4, 5, 6, 7])[None]
    goals = np.stack([ag[0, 3], ag[0, 5], np.full(8, 1.0) - np.eye(8)[0]])
    minus_one_zero = relabel(ag, np.array([8]), goals, BITS, 8, 0.0)
    zero_one = relabel(ag, np.array([8]), goals, ZeroOneBits(), 8, 1.0)
    for a, b in zip(minus_one_zero, zero_one):
        np.testing.assert_array_equal(a, b)
    assert zero_one[1][0, 0, 2] == 6 and zero_one[0][0, 1].sum() == 5  # the hits are found, not missed


def test_check_env_reads_the_reward_convention_and_refuses_what_htrpo_cannot_relabel():
    for name, convention in (("PointMaze_UMaze-v3", (0.0, 1.0)), ("BitFlip:n=8,start=zeros", (-1.0, 0.0))):
        env = envs.make(name)
        assert check_env(env, fill_defaults(Args(env=name), env)) == convention
    for name, message in (("PointMaze_UMazeDense-v3", "dense or unknown reward"),
                          ("FrankaKitchen-v1", "cannot be relabelled"),  # dict goals
                          ("DriveSeek", "cannot be relabelled")):  # a goal set
        env = envs.make(name)
        with pytest.raises(envs.EnvError, match=message):
            check_env(env, fill_defaults(Args(env=name), env))


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


def test_weighted_is_weights_are_the_unclipped_ones_and_stay_finite_where_exp_overflows():
    """Log ratios beyond +-50 keep their relative weights (the old clip at +-50 flattened them), and a shift by 1000 of
    every episode's log ratio for one goal, where exp overflows in float64, leaves the weights unchanged."""
    rng = np.random.default_rng(1)
    N, M, T = 6, 4, 8
    valid = np.cumsum(rng.random((N, M, T)) < 0.2, 2) == 0
    valid[:, 3] = False  # a goal with no kept step: weights 0
    logp_new, logp_orig = rng.normal(0, 30, (N, M, T)), rng.normal(0, 30, (N, T))
    log_rho = np.cumsum((logp_new - logp_orig[:, None]) * valid, 2)
    assert np.abs(log_rho[valid]).max() > 100  # far outside the old clip
    rho = np.exp(log_rho) * valid  # float64: no overflow below ~700
    reference = np.divide(rho, rho.sum(0), out=np.zeros_like(rho), where=rho.sum(0) > 0)
    w = importance_weights(logp_new, logp_orig, valid, floor=0.0)
    np.testing.assert_allclose(w, reference, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(w.sum(0)[valid.any(0)], 1.0)
    shifted = logp_new.copy()
    shifted[:, 1, 0] += 1000  # every episode's ratio for goal 1 times e^1000 from step 0 on
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(np.cumsum((shifted - logp_orig[:, None]) * valid, 2))[valid]).any()
    w_shifted = importance_weights(shifted, logp_orig, valid, floor=0.0)
    assert np.isfinite(w_shifted).all()
    np.testing.assert_allclose(w_shifted, w, rtol=1e-9, atol=1e-300)
    assert np.isfinite(importance_weights(shifted, logp_orig, valid, weighted=False)).all()  # raw: clipped


def test_weighted_is_floor_is_the_authors_rho_plus_1e10_and_makes_tiny_ratios_uniform():
    """The default adds the authors' 1e-10 to every kept ratio before normalising (HPG_Gaussian.py): the weights equal
    float64's (rho + 1e-10) / sum where exp is finite, a goal whose ratios are all far below 1e-10 weighs its episodes
    equally, and shifts of +-1000 in log space stay finite."""
    rng = np.random.default_rng(2)
    N, M, T = 5, 3, 6
    valid = np.ones((N, M, T), bool)
    valid[0, 2, 3:] = False  # episode 0 dropped after step 2 for goal 2
    logp_orig = rng.normal(0, 1, (N, T))
    logp_new = logp_orig[:, None] + rng.normal(0, 3, (N, M, T))
    rho = np.exp(np.cumsum((logp_new - logp_orig[:, None]) * valid, 2)) * valid
    reference = (rho + 1e-10) * valid / ((rho + 1e-10) * valid).sum(0)
    w = importance_weights(logp_new, logp_orig, valid)
    np.testing.assert_allclose(w, reference, rtol=1e-10)
    tiny = logp_new.copy()
    tiny[:, 1, 0] -= 100 + rng.random(N) * 50  # every episode's ratio for goal 1 below e^-100 from step 0 on
    tiny, logp_orig = tiny.astype(np.float32), logp_orig.astype(np.float32)  # as build_batch passes them
    with np.errstate(over="raise", invalid="raise"):
        w_tiny = importance_weights(tiny, logp_orig, valid)
    np.testing.assert_allclose(w_tiny[:, 1], 1 / N, rtol=1e-6)  # the floor dominates: uniform over the 5 episodes
    assert importance_weights(tiny, logp_orig, valid, floor=0.0)[:, 1].max() > 0.99  # exact WIS: all on the largest
    for shift in (1000.0, -1000.0):
        moved = logp_new.copy()
        moved[:, 0, 0] += shift
        w_moved = importance_weights(moved, logp_orig, valid)
        assert np.isfinite(w_moved).all()
        np.testing.assert_allclose(w_moved.sum(0), 1.0)


def test_normalisers_skip_the_steps_past_each_episodes_end():
    """Steps past ep_len hold zeros or the env's auto-reset; here they hold 1000, which must not reach the means."""
    T, ep_len = 5, np.array([3, 5])
    obs, ag = np.full((2, T + 1, 2), 1000.0), np.full((2, T + 1, 3), 1000.0)
    for i, L in enumerate(ep_len):
        obs[i, :L], ag[i, 1:L + 1] = i + 1, -(i + 1)  # s_0 .. s_{L-1} and ag_1 .. ag_L
    g, zeros = np.full((2, 3), 7.0), np.zeros(2)
    o_norm, g_norm = Normalizer(2), Normalizer(3)
    update_normalizers(o_norm, g_norm, Episodes(obs, ag, g, np.zeros((2, T, 4)), ep_len, zeros, zeros,
                                                np.zeros((2, T)), zeros))
    assert o_norm.count == 8 and g_norm.count == 2 + 8
    np.testing.assert_allclose(o_norm.mean, (3 * 1 + 5 * 2) / 8)
    np.testing.assert_allclose(g_norm.mean, (2 * 7 - 3 * 1 - 5 * 2) / 10, rtol=1e-6)


# -- the hindsight batch and the update -------------------------------------------------------------------------------

@pytest.fixture
def bitflip_batch():
    """24 random-policy BitFlip episodes (ending on success, as the env does), a fresh policy and critic, the
    BitFlip defaults and an identity normaliser."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    args = fill_defaults(Args(hidden_dims=[32]), envs.make("BitFlip:n=8,start=zeros"))
    policy, critic = Policy(16, gym.spaces.Discrete(8), [32]), torch.nn.Sequential(torch.nn.Linear(16, 1))
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
    zeros = np.zeros(N)
    ep = Episodes(ag, ag, g, actions.astype(np.float32), ep_len, zeros, zeros, logp, zeros)
    return ep, policy, critic, args, rng, Normalizer(8, clip_range=np.inf)


def test_trpo_replays_each_episode_under_its_own_goal_with_weights_one(bitflip_batch):
    ep, policy, critic, args, rng, norm = bitflip_batch
    args.algo = "trpo"
    batch, stats = build_batch(ep, policy, norm, norm, BITS, 8, 0.0, args, rng, "cpu")
    kept = ep.ep_len > 1  # a 1-step episode reaches its goal with the first action: dropped
    assert stats["samples"] == ep.ep_len[kept].sum() and stats["pairs"] == kept.sum()
    torch.testing.assert_close(batch.weights, torch.ones_like(batch.weights))  # one episode per (goal, step)
    np.testing.assert_array_equal(batch.steps.numpy(), np.concatenate([np.arange(L) for L in ep.ep_len[kept]]))
    # under its own goal, log pi~(a | s, g') is the rollout's own log-probability: every ratio is 1
    i = np.repeat(np.flatnonzero(kept), ep.ep_len[kept])
    torch.testing.assert_close(batch.logp_old, torch.as_tensor(ep.logp[i, batch.steps.numpy()]))
    # the bonus T_max - L + 1 sits on the last step of each episode that reached its goal (ended early)
    reached = kept & (ep.ag[np.arange(len(ep.g)), ep.ep_len] == ep.g).all(1)
    assert batch.rewards.sum().item() == pytest.approx(float((8 - ep.ep_len[reached] + 1).sum()))
    assert batch.dones.sum().item() == kept.sum()


def test_hindsight_batch_replays_every_episode_under_every_achieved_goal(bitflip_batch):
    ep, policy, critic, args, rng, norm = bitflip_batch
    _, stats = build_batch(ep, policy, norm, norm, BITS, 8, 0.0, args, rng, "cpu")
    achieved = np.unique(np.concatenate([ep.ag[i, 1:ep.ep_len[i] + 1] for i in range(len(ep.ep_len))]), axis=0)
    assert stats["hindsight_goals"] == len(achieved)
    assert stats["pairs"] > len(ep.ep_len) and 0 < stats["ess"] <= stats["samples"]


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


def test_trust_region_step_stays_inside_the_region_and_improves_the_surrogate(bitflip_batch):
    ep, policy, critic, args, rng, norm = bitflip_batch
    batch, _ = build_batch(ep, policy, norm, norm, BITS, 8, 0.0, args, rng, "cpu")
    before = [p.detach().clone() for p in policy.parameters()]
    args.fvp_subsample = 1.0
    losses = update(batch, policy, critic, None, torch.optim.Adam(critic.parameters(), 5e-4), args, rng)
    assert losses["step_fraction"] > 0 and 0 < losses["kl_estimate"] < 1.5 * args.max_kl
    assert losses["surrogate_improvement"] > 0 and losses["step_norm"] > 0 and losses["critic_loss"] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.parameters()))


def test_hpg_takes_one_adam_step_and_no_trust_region(bitflip_batch):
    ep, policy, critic, args, rng, norm = bitflip_batch
    args.algo = "hpg"
    batch, _ = build_batch(ep, policy, norm, norm, BITS, 8, 0.0, args, rng, "cpu")
    policy_opt = torch.optim.Adam(policy.parameters(), lr=args.lr_actor)
    losses = update(batch, policy, critic, policy_opt, torch.optim.Adam(critic.parameters(), 5e-4), args, rng)
    assert set(losses) == {"step_norm", "critic_loss"} and losses["step_norm"] > 0
    assert policy_opt.state_dict()["state"][0]["step"] == 1


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


def test_per_env_defaults_fill_only_the_flags_left_unset():
    reach, bits16 = envs.make("FetchReach"), envs.make("BitFlip:n=16,start=zeros")
    args = fill_defaults(Args(env="FetchReach"), reach)
    assert (args.total_timesteps, args.steps_per_iter, args.n_goals, args.gamma, args.eval_interval,
            args.n_test_rollouts, args.normalize, args.max_kl) == (32_000, 400, 30, 0.98, 8000, 20, True, 1e-3)
    args = fill_defaults(Args(env="FetchReach-v4", total_timesteps=1000, paper=True, max_kl=1e-4), reach)
    assert (args.total_timesteps, args.max_kl, args.steps_per_iter, args.n_goals) == (1000, 1e-4, 3200, 100)
    assert args.hidden_dims == [256, 256, 256] and args.eval_interval == 8000
    args = fill_defaults(Args(env="BitFlip:n=16,start=zeros"), bits16)
    assert (args.total_timesteps, args.steps_per_iter, args.n_goals, args.gamma) == (5_000, 256, 64, 0.9)
    assert args.eval_interval == 4 * 256  # 4 batches
    assert fill_defaults(Args(env="FetchPush"), reach).total_timesteps == 2_000_000


# -- the script as a user runs it -------------------------------------------------------------------------------------

HEADER = r"htrpo \| {env} \| {steps} env steps \| seed 1 \| run runs/\S+ \| tensorboard --logdir runs"
STEP = (r"step +\d+/{steps} \| success \d\.\d\d \| return +-?\d+\.\d\d \| reached \d\.\d\d \| SPS +\d+ \| "
        r"+\d+s elapsed, ~\d+s left")
SUMMARY = r"htrpo done \| success \d\.\d\d \| [\d,]+ env steps \| [\d,]+ gradient steps \| \d+ s"
TINY = ["--steps-per-iter", "40", "--n-test-rollouts", "4", "--hidden-dims", "16"]


def test_help_is_the_manual(run):
    out = " ".join(run("htrpo.py", "--help").stdout.replace("│", " ").split())  # undo the help's line wrapping
    assert "32k on FetchReach" in out and "20 on Fetch" in out and "8k on FetchReach" in out and "delta 2e-5" in out


def test_a_2k_step_run_learns_6_bits_and_prints_header_evaluations_summary_and_checkpoint(run, tmp_path):
    """About 15 s of CPU; measured: 1.00 at 2k env steps, where --algo trpo ends at 0.14."""
    stdout, ckpt = train_save_and_reload(run, tmp_path, ["htrpo.py"], "BitFlip:n=6,start=zeros", "--total-timesteps",
                                         "2000")
    lines = stdout.strip().splitlines()
    assert re.fullmatch(HEADER.format(env="BitFlip-v0", steps="2,000"), lines[0]), lines[0]
    assert len(eval_lines(stdout)) >= 4 and all(re.fullmatch(STEP.format(steps=2000), line) for line in lines[1:-1])
    assert final_success(stdout) >= 0.9
    assert re.fullmatch(SUMMARY + r" \| checkpoint \S+htrpo\.pt \(evaluate: python htrpo\.py --eval-checkpoint \S+\)",
                        lines[-1]), lines[-1]
    saved = torch.load(ckpt, weights_only=True)  # tensors and plain types only
    assert saved["algo"] == "htrpo" and all(isinstance(v, torch.Tensor) for v in saved["o_norm"].values())


def test_a_budget_below_one_batch_still_evaluates_and_summarises(run):
    """Batches are whole episodes: a 1-step budget collects one batch, then evaluates (also trpo, raw IS ratios)."""
    out = run("htrpo.py", "--env", "FourRoomMaze", "--algo", "trpo", "--no-weighted-is", "--total-timesteps", "1",
              *TINY)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and len(lines) == 3, out.stdout + out.stderr
    assert re.fullmatch(HEADER.format(env="Maze-v0", steps=1), lines[0]), lines[0]
    assert re.fullmatch(STEP.format(steps=1), lines[1]), lines[1]
    assert re.fullmatch(SUMMARY, lines[2]), lines[2]


def test_smoke_every_method_and_env_family(run):
    tiny = ["--total-timesteps", "160", "--steps-per-iter", "80", "--n-test-rollouts", "4", "--hidden-dims", "16"]
    for args in (["--env", "PointMaze_UMaze-v3", "--n-goals", "5", "--no-hgf", "--no-qkl", "--dense"],  # 0/1 reward
                 ["--env", "FetchReach", "--discrete", "3", "--algo", "hpg"]):  # FourRoomMaze, trpo: the budget test
        out = run("htrpo.py", *tiny, *args)
        assert out.returncode == 0, (args, out.stderr)
        assert len(eval_lines(out.stdout)) == 1 and "htrpo done" in out.stdout, (args, out.stdout)


@pytest.mark.parametrize("args,message", [(["--env", "DriveSeek"], "cannot be relabelled"),
                                          (["--env", "BitFlip", "--steps-per-iter", "0"], "--steps-per-iter"),
                                          (["--eval-checkpoint", "nope.pt"], "no checkpoint at nope.pt")])
def test_bad_input_gets_a_one_line_error(run, args, message):
    assert_one_line_error(run("htrpo.py", *args), message)


def test_bad_settings_raise_one_line_env_errors():
    env = envs.make("BitFlip:n=4")
    for bad, message in ((dict(max_kl=0), "--max-kl"), (dict(gamma=1.0), "--gamma"),
                         (dict(n_test_rollouts=0), "--n-test-rollouts"), (dict(critic_iters=0), "--critic-iters")):
        with pytest.raises(envs.EnvError, match=message):
            check_env(env, fill_defaults(Args(env="BitFlip:n=4", **bad), env))
    with pytest.raises(envs.EnvError, match="bins >= 2"):
        make_env(Args(env="FetchReach", discrete=1))


class CreatesMarker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # unpickling this calls open(path, "w"): the file appears if the pickle is executed
        return open, (self.path, "w")


def test_a_garbage_or_malicious_checkpoint_is_refused_in_one_line(run, tmp_path):
    (tmp_path / "garbage.pt").write_text("not a checkpoint")
    assert_one_line_error(run("htrpo.py", "--eval-checkpoint", "garbage.pt"), "garbage.pt is not a htrpo.py checkpoint")
    marker = tmp_path / "marker"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"algo": "htrpo", "payload": CreatesMarker(str(marker))}, f)
    assert_one_line_error(run("htrpo.py", "--eval-checkpoint", "evil.pt"), "evil.pt is not a htrpo.py checkpoint")
    assert not marker.exists()


def test_another_scripts_checkpoint_is_refused(tmp_path):
    torch.save({"algo": "her_ddpg", "args": {}}, tmp_path / "other.pt")
    with pytest.raises(envs.EnvError, match="other.pt is not a htrpo.py checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))


@pytest.mark.slow
def test_learns_bitflip_8_and_trpo_without_hindsight_does_not(run):
    """The demo: 8 bits from all zeros, 5k env steps."""
    assert final_success(run("htrpo.py", timeout=1200).stdout) >= 0.9
    assert final_success(run("htrpo.py", "--algo", "trpo", timeout=1200).stdout) <= 0.2


@pytest.mark.slow
def test_default_fetch_reach_run_is_solved(run, tmp_path):
    """The bare command: 32k env steps, about 3 min on an idle 2-core machine."""
    out = run("htrpo.py", "--env", "FetchReach", timeout=3600)
    assert final_success(out.stdout) >= 0.9 and glob.glob(str(tmp_path / "runs" / "FetchReach__htrpo_htrpo__1__*"))
