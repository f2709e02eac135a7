using KvFetcher.Store.Shaping;

namespace KvFetcher.Store.Tests.Shaping;

public sealed class BandwidthScheduleTests
{
    private static TimeSpan Ms(double milliseconds) => TimeSpan.FromMilliseconds(milliseconds);

    [Fact]
    public void Constant_AnyTime_SameRateAndLinearBytes()
    {
        BandwidthSchedule schedule = BandwidthSchedule.Constant(1000);
        Assert.Equal(1000, schedule.RateAt(TimeSpan.Zero));
        Assert.Equal(1000, schedule.RateAt(TimeSpan.FromDays(3)));
        Assert.Equal(2500, schedule.BytesBetween(Ms(500), Ms(3000)), 6);
        Assert.Equal(Ms(1500), schedule.TimeToCarry(Ms(700), 1500));
        Assert.Equal(TimeSpan.Zero, schedule.TimeToCarry(Ms(700), 0));
    }

    [Fact]
    public void Alternating_SwitchesAtEachBoundaryAndRepeats()
    {
        BandwidthSchedule schedule = BandwidthSchedule.Alternating(100, 300, Ms(500));
        Assert.Equal(100, schedule.RateAt(Ms(0)));
        Assert.Equal(100, schedule.RateAt(Ms(499.9)));
        Assert.Equal(300, schedule.RateAt(Ms(500)));
        Assert.Equal(300, schedule.RateAt(Ms(999.9)));
        Assert.Equal(100, schedule.RateAt(Ms(1000)));
        Assert.Equal(300, schedule.RateAt(Ms(10_700)));
        Assert.Equal(200, schedule.MeanBytesPerSecond, 9);
        Assert.Equal(300, schedule.MaxBytesPerSecond);
    }

    [Fact]
    public void BytesBetween_AcrossSteps_IsTheIntegralOfTheRate()
    {
        BandwidthSchedule schedule = BandwidthSchedule.Alternating(100, 300, Ms(500));
        Assert.Equal(50, schedule.BytesBetween(Ms(0), Ms(500)), 6);
        Assert.Equal(200, schedule.BytesBetween(Ms(0), Ms(1000)), 6);
        Assert.Equal((0.25 * 100) + (0.5 * 300) + (0.25 * 100), schedule.BytesBetween(Ms(250), Ms(1250)), 6);
        Assert.Equal(10 * 200, schedule.BytesBetween(Ms(3000), Ms(13_000)), 6);
        Assert.Equal(0, schedule.BytesBetween(Ms(900), Ms(900)));
        Assert.Equal(0, schedule.BytesBetween(Ms(900), Ms(100)));
    }

    [Theory]
    [InlineData(0, 50, 500)] // exactly the first step
    [InlineData(0, 80, 600)] // 50 in the slow step, 30 more at 300/s
    [InlineData(250, 25, 500)] // to the end of the slow step
    [InlineData(900, 200, 1900)] // a whole period later
    [InlineData(900, 1000, 5900)]
    public void TimeToCarry_InvertsBytesBetween(double fromMs, double bytes, double expectedEndMs)
    {
        BandwidthSchedule schedule = BandwidthSchedule.Alternating(100, 300, Ms(500));
        TimeSpan wait = schedule.TimeToCarry(Ms(fromMs), bytes);
        Assert.Equal(expectedEndMs, fromMs + wait.TotalMilliseconds, 3);
        Assert.True(schedule.BytesBetween(Ms(fromMs), Ms(fromMs) + wait) >= bytes - 1e-9);
    }

    [Fact]
    public void TimeToCarry_OutageStep_WaitsItOut()
    {
        BandwidthSchedule schedule = BandwidthSchedule.Repeating([new BandwidthStep(Ms(100), 1000), new BandwidthStep(Ms(400), 0)]);
        Assert.Equal(0, schedule.RateAt(Ms(200)));
        // 100 bytes fill the first step; the next byte waits out the outage (until 500 ms) and takes 1 ms more.
        Assert.Equal(501, schedule.TimeToCarry(TimeSpan.Zero, 101).TotalMilliseconds, 3);
        Assert.Equal(360, schedule.TimeToCarry(Ms(150), 10).TotalMilliseconds, 3);
    }

    [Theory]
    [InlineData("10Gbps", 1.25e9)]
    [InlineData("500Mbps", 62.5e6)]
    [InlineData("8Kbps", 1000)]
    [InlineData("100MB/s", 1e8)]
    [InlineData("1.5GB/s", 1.5e9)]
    [InlineData("64bps", 8)]
    public void Parse_ConstantRate_ConvertsUnits(string text, double bytesPerSecond)
    {
        BandwidthSchedule schedule = BandwidthSchedule.Parse(text);
        Assert.Single(schedule.Steps);
        Assert.Equal(bytesPerSecond, schedule.RateAt(TimeSpan.Zero), 6);
    }

    [Fact]
    public void Parse_Steps_RepeatsThemAndRoundTripsThroughToString()
    {
        BandwidthSchedule schedule = BandwidthSchedule.Parse("1Gbps@500ms, 200Mbps@1.5s");
        Assert.Equal([new BandwidthStep(Ms(500), 125e6), new BandwidthStep(Ms(1500), 25e6)], schedule.Steps);
        Assert.Equal(25e6, schedule.RateAt(Ms(2600)));
        Assert.Equal(125e6, schedule.RateAt(Ms(2100)));
        Assert.Equal("1Gbps@500ms,200Mbps@1500ms", schedule.ToString());
        Assert.Equal(schedule.Steps, BandwidthSchedule.Parse(schedule.ToString()).Steps);
    }

    [Theory]
    [InlineData("fast")]
    [InlineData("10")]
    [InlineData("-5Mbps")]
    [InlineData("1Gbps@")]
    [InlineData("1Gbps@10min")]
    [InlineData("1Gbps@500ms,2Gbps")]
    [InlineData("1Gbps@0ms")]
    public void Parse_Malformed_ThrowsFormatException(string text) =>
        Assert.Throws<FormatException>(() => BandwidthSchedule.Parse(text));

    [Fact]
    public void Repeating_Invalid_ThrowsArgumentException()
    {
        Assert.Throws<ArgumentException>(() => BandwidthSchedule.Repeating([]));
        Assert.Throws<ArgumentException>(() => BandwidthSchedule.Repeating([new BandwidthStep(TimeSpan.Zero, 5)]));
        Assert.Throws<ArgumentException>(() => BandwidthSchedule.Repeating([new BandwidthStep(Ms(5), -1)]));
        Assert.Throws<ArgumentException>(() => BandwidthSchedule.Repeating([new BandwidthStep(Ms(5), double.PositiveInfinity)]));
        Assert.Throws<ArgumentException>(() => BandwidthSchedule.Repeating([new BandwidthStep(Ms(5), 0)]));
        Assert.Throws<ArgumentException>(() => BandwidthSchedule.Constant(0));
    }
}
