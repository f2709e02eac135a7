using KvFetcher.Engine.Generation;

namespace KvFetcher.Engine.Tests.Generation;

public class SamplerTests
{
    private static readonly float[] s_logits = [1f, 3f, 2.5f, -1f, 0f];

    [Fact]
    public void Next_Greedy_IsArgMax()
    {
        var sampler = new Sampler(new SamplingOptions { Temperature = 0 }, s_logits.Length);
        Assert.Equal(1, sampler.Next(s_logits));
    }

    [Fact]
    public void Next_SmallTopP_OnlyTopToken()
    {
        var sampler = new Sampler(new SamplingOptions { Temperature = 1, TopP = 0.05f, Seed = 1 }, s_logits.Length);
        for (int i = 0; i < 200; i++)
        {
            Assert.Equal(1, sampler.Next(s_logits));
        }
    }

    [Fact]
    public void Next_TopP_NeverOutsideNucleus()
    {
        // softmax(s_logits): token 1 ~0.53, token 2 ~0.32, together ~0.85; top-p 0.8 keeps exactly those two.
        var sampler = new Sampler(new SamplingOptions { Temperature = 1, TopP = 0.8f, Seed = 2 }, s_logits.Length);
        var seen = new HashSet<int>();
        for (int i = 0; i < 2000; i++)
        {
            seen.Add(sampler.Next(s_logits));
        }

        Assert.Equal([1, 2], seen.Order());
    }

    [Fact]
    public void Next_Temperature_FrequenciesFollowSoftmax()
    {
        var sampler = new Sampler(new SamplingOptions { Temperature = 1, Seed = 3 }, s_logits.Length);
        var counts = new int[s_logits.Length];
        const int Draws = 20_000;
        for (int i = 0; i < Draws; i++)
        {
            counts[sampler.Next(s_logits)]++;
        }

        double total = s_logits.Sum(l => Math.Exp(l));
        for (int t = 0; t < s_logits.Length; t++)
        {
            Assert.Equal(Math.Exp(s_logits[t]) / total, counts[t] / (double)Draws, 0.015);
        }
    }

    [Fact]
    public void Next_SameSeed_SameSequence()
    {
        var options = new SamplingOptions { Temperature = 0.9f, TopP = 0.95f, Seed = 42 };
        var a = new Sampler(options, s_logits.Length);
        var b = new Sampler(options, s_logits.Length);
        for (int i = 0; i < 100; i++)
        {
            Assert.Equal(a.Next(s_logits), b.Next(s_logits));
        }
    }

    [Theory]
    [InlineData(-0.1f, 1f)]
    [InlineData(float.NaN, 1f)]
    [InlineData(1f, 0f)]
    [InlineData(1f, 1.5f)]
    public void Constructor_BadOptions_Throw(float temperature, float topP)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(new SamplingOptions { Temperature = temperature, TopP = topP }, 4));
    }
}
