# Intermittent planning: the policy posterior of an agent that does not re-evaluate its
# policies this step, carried one step forward (fa_core.Population.step(obs, replan=mask)).


cdef inline void shift_policy_posterior(float* q_pi, int n_pol, const int* policies, int T,
                                        int nf, const int* action, const int* head,
                                        const int* tail, const float* share, int n_keys,
                                        float* mass) noexcept nogil:
    """``q_pi`` shifted one step, in place, after the agent took ``action``.

    With ``T`` = 1 there is no later step to move to: ``q_pi`` is kept. With
    ``T`` > 1 a policy ``p = (a_0, ..., a_{T-1})`` that began with the action
    taken has ``(a_1, ..., a_{T-1})`` left to do; its mass goes to the policies
    starting with that remainder, shared equally among them (they differ only
    in their last step, which no plan made so far specifies):
    ``q'(p) = share[p] * sum of q(p') over p' with p'[0] == action and p'[1:] == p[:-1]``.
    ``head[p]`` numbers ``p[:-1]``, ``tail[p']`` the ``p'[1:]`` with the same numbering
    (-1 if no policy starts that way), ``share[p]`` is 1 / (policies with p's head).
    No mass left (the action taken is not the start of any policy with mass, or no
    remainder starts a policy): the same without requiring ``p'[0] == action``; and if
    that has none either, ``q_pi`` is kept. ``mass`` needs ``n_keys`` floats.
    """
    cdef int p, f, k, match, attempt
    cdef double tot
    if T <= 1:
        return
    for attempt in range(2):
        for k in range(n_keys):
            mass[k] = 0.0
        for p in range(n_pol):
            if tail[p] < 0:
                continue
            match = 1
            if attempt == 0:
                for f in range(nf):
                    if policies[p * T * nf + f] != action[f]:
                        match = 0
                        break
            if match:
                mass[tail[p]] += q_pi[p]
        tot = 0.0
        for p in range(n_pol):
            tot += mass[head[p]] * share[p]
        if tot > 0.0:
            for p in range(n_pol):
                q_pi[p] = <float>(mass[head[p]] * share[p] / tot)
            return
