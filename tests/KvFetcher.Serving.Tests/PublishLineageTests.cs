using KvFetcher.Serving.Scheduling;

namespace KvFetcher.Serving.Tests;

/// <summary>
/// What serving publishes after a restored prefix: chunks computed on top of KV restored from a lossy variant are not
/// stored (they would go under names that promise a full prefill's KV); after a lossless prefix they are.
/// </summary>
public sealed class PublishLineageTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    [Theory]
    [InlineData("video4", 0)]
    [InlineData("raw", 2)]
    public async Task LongerPrompt_AfterARestoredPrefix_PublishesComputedChunksOnlyOnLosslessKv(string variant, int published)
    {
        string store = Directory.CreateTempSubdirectory("kvf-lineage-").FullName;
        try
        {
            KvFetcherOptions options = fixture.EngineOptions(store: store);
            options.Variant = variant;

            // Calibrated: the model's profile says the variant passes the accuracy floor (else only lossless ones are fetched).
            options.CalibrationProfileFile = Path.Combine(store, "profile.json");
            KvFetcher.Tests.TestProfiles.Passing(fixture.Model.Fingerprint, variant).Save(options.CalibrationProfileFile);
            await using KvFetcherEngine engine = await KvFetcherEngine.StartAsync(options, TestContext.Current.CancellationToken);
            int[] document = fixture.Model.Tokenizer.Encode(fixture.Document);

            // Turn 1 stores the first chunk; turn 2 restores it and computes two more.
            await engine.Submit(new GenerationRequest { Prompt = document[..300], MaxTokens = 1 }, TestContext.Current.CancellationToken).Completion;
            await engine.WhenPublishedAsync();
            Assert.Equal(1, engine.Publisher!.Published);
            GenerationResult second = await engine.Submit(new GenerationRequest { Prompt = document[..800], MaxTokens = 1 }, TestContext.Current.CancellationToken).Completion;
            await engine.WhenPublishedAsync();

            Assert.Equal(256, second.Prefill.ReusedTokens);
            Assert.Equal(1 + published, engine.Publisher.Published);
        }
        finally
        {
            Directory.Delete(store, recursive: true);
        }
    }

    [Fact]
    public async Task Prefill_WholeChunksComputed_EngineComputeTimesReachTheRates()
    {
        string store = Directory.CreateTempSubdirectory("kvf-rates-").FullName;
        try
        {
            await using KvFetcherEngine engine = await KvFetcherEngine.StartAsync(fixture.EngineOptions(store: store), TestContext.Current.CancellationToken);
            int[] document = fixture.Model.Tokenizer.Encode(fixture.Document);
            double prior = engine.Rates!.ComputeSeconds(1, 256);
            Assert.Equal(prior, new Fetch.Fetching.FetchRates().ComputeSeconds(1, 256));

            await engine.Submit(new GenerationRequest { Prompt = document[..600], MaxTokens = 1 }, TestContext.Current.CancellationToken).Completion;

            Assert.NotEqual(prior, engine.Rates.ComputeSeconds(1, 256)); // measured now, not the prior
        }
        finally
        {
            Directory.Delete(store, recursive: true);
        }
    }
}
