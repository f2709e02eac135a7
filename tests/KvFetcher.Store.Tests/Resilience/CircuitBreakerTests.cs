using KvFetcher.Store.Resilience;
using Microsoft.Extensions.Time.Testing;

namespace KvFetcher.Store.Tests.Resilience;

public sealed class CircuitBreakerTests
{
    private readonly FakeTimeProvider _time = new();

    [Fact]
    public void TryEnter_AfterThresholdFailuresInARow_RefusesUntilTheBreakEnds()
    {
        CircuitBreaker breaker = NewBreaker();
        Fail(breaker, 3);

        Assert.Equal(CircuitState.Open, breaker.State);
        Assert.False(breaker.TryEnter(out _));
        _time.Advance(TimeSpan.FromMilliseconds(999));
        Assert.False(breaker.TryEnter(out _));
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(breaker.TryEnter(out bool probe));
        Assert.True(probe);
        Assert.Equal(2, breaker.Rejected);
    }

    [Fact]
    public void Exit_SuccessBetweenFailures_ResetsTheCount()
    {
        CircuitBreaker breaker = NewBreaker();
        Fail(breaker, 2);
        Assert.True(breaker.TryEnter(out bool probe));
        breaker.Exit(probe, CallOutcome.Success);
        Fail(breaker, 2);

        Assert.Equal(CircuitState.Closed, breaker.State);
        Assert.Equal(2, breaker.ConsecutiveFailures);
    }

    [Fact]
    public void TryEnter_HalfOpen_AdmitsOneProbeAtATime()
    {
        CircuitBreaker breaker = NewBreaker();
        Fail(breaker, 3);
        _time.Advance(TimeSpan.FromSeconds(1));

        Assert.True(breaker.TryEnter(out bool first));
        Assert.False(breaker.TryEnter(out _));
        breaker.Exit(first, CallOutcome.Neutral); // the probe said nothing: the next caller probes
        Assert.True(breaker.TryEnter(out bool second));
        Assert.True(second);
    }

    [Fact]
    public void Exit_ProbeSucceeds_ClosesTheCircuit()
    {
        CircuitBreaker breaker = NewBreaker();
        Fail(breaker, 3);
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(breaker.TryEnter(out bool probe));
        breaker.Exit(probe, CallOutcome.Success);

        Assert.Equal(CircuitState.Closed, breaker.State);
        Assert.True(breaker.TryEnter(out bool next));
        Assert.False(next);
    }

    [Fact]
    public void Exit_ProbeFails_ReopensForTwiceAsLongUpToTheMaximum()
    {
        CircuitBreaker breaker = NewBreaker();
        Fail(breaker, 3);
        TimeSpan[] breaks = new TimeSpan[5];
        for (int i = 0; i < breaks.Length; i++)
        {
            breaks[i] = breaker.RetryIn;
            _time.Advance(breaks[i]);
            Assert.True(breaker.TryEnter(out bool probe));
            breaker.Exit(probe, CallOutcome.Failure, "still down");
        }

        Assert.Equal([1, 2, 4, 8, 8], breaks.Select(b => b.TotalSeconds));
        Assert.Equal(6, breaker.TimesOpened);
        Assert.Equal("still down", breaker.LastFailure);
    }

    [Fact]
    public void Exit_NeutralOutcomes_NeverOpen()
    {
        CircuitBreaker breaker = NewBreaker();
        for (int i = 0; i < 10; i++)
        {
            Assert.True(breaker.TryEnter(out bool probe));
            breaker.Exit(probe, CallOutcome.Neutral);
        }

        Assert.Equal(CircuitState.Closed, breaker.State);
    }

    private CircuitBreaker NewBreaker() => new(new CircuitBreakerOptions
    {
        FailureThreshold = 3,
        BreakDuration = TimeSpan.FromSeconds(1),
        MaxBreakDuration = TimeSpan.FromSeconds(8),
    }, _time);

    private static void Fail(CircuitBreaker breaker, int times)
    {
        for (int i = 0; i < times; i++)
        {
            Assert.True(breaker.TryEnter(out bool probe));
            breaker.Exit(probe, CallOutcome.Failure, "down");
        }
    }
}
