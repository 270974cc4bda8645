"""Medians and spread of repeated timings."""

import statistics


def summary(values):
    """median, min, max, q1, q3 and n of a list of numbers (None if empty)."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    if len(v) >= 2:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    else:
        q1 = q3 = v[0]
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q1, "q3": q3, "n": len(v)}


def ms(seconds):
    """A duration in seconds, as milliseconds for a table cell."""
    if seconds is None:
        return "n/a"
    x = seconds * 1000
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def cell(s):
    """`median [min–max]` in milliseconds."""
    if not s:
        return "n/a"
    return f"{ms(s['median'])} [{ms(s['min'])}–{ms(s['max'])}]"


def iqr(s):
    if not s:
        return "n/a"
    return f"{ms(s['q1'])}–{ms(s['q3'])}"


def ratio(a, b):
    """a/b of two medians, or None."""
    if not a or not b or not b["median"]:
        return None
    return a["median"] / b["median"]


def fmt_ratio(r, digits=2):
    return "n/a" if r is None else f"{r:.{digits}f}x"
