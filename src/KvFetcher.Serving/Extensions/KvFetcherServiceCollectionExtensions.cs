using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace KvFetcher.Serving.Extensions;

/// <summary>
/// Registers KvFetcher in a service collection: <c>services.AddKvFetcher(configuration.GetSection("KvFetcher"))</c>
/// binds <see cref="KvFetcherOptions"/>, validated when the host starts (<c>ValidateOnStart</c>: bad options fail
/// <c>StartAsync</c> with the problem named) or, without a host, at the first resolve; adds the
/// <see cref="KvFetcherEngineLoader"/> (the model loaded and the store opened asynchronously, by a hosted service when
/// the host starts, else on the first request: no resolve blocks on it), an <see cref="IChatClient"/> over its engine,
/// and <see cref="KvFetcherEngine"/> (resolvable once loaded). The engine logs through the container's
/// <see cref="Microsoft.Extensions.Logging.ILoggerFactory"/> and records on a <c>KvFetcher</c> meter of its
/// <see cref="System.Diagnostics.Metrics.IMeterFactory"/> (when registered). Everything is disposed with the container,
/// synchronously or asynchronously.
/// </summary>
public static class KvFetcherServiceCollectionExtensions
{
    /// <summary>Adds KvFetcher with options bound from <paramref name="configuration"/> (e.g. a <c>KvFetcher</c> section).</summary>
    public static IServiceCollection AddKvFetcher(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configuration);
        services.AddOptions<KvFetcherOptions>().Bind(configuration);
        return AddCore(services);
    }

    /// <summary>Adds KvFetcher with options set in code.</summary>
    public static IServiceCollection AddKvFetcher(this IServiceCollection services, Action<KvFetcherOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<KvFetcherOptions>().Configure(configure);
        return AddCore(services);
    }

    private static IServiceCollection AddCore(IServiceCollection services)
    {
        services.AddOptions<KvFetcherOptions>().Validate(Validate, "KvFetcher options are invalid.").ValidateOnStart();
        // The loader owns the engine; the container disposes the loader (Dispose or DisposeAsync), which disposes the engine.
        services.TryAddSingleton(provider => new KvFetcherEngineLoader(provider.GetRequiredService<IOptions<KvFetcherOptions>>(),
            provider.GetService<ILoggerFactory>(), provider.GetService<IMeterFactory>()));
        services.AddHostedService<KvFetcherEngineLoader.Startup>();
        // Resolvable once loaded (until then it throws, saying how to wait; the failure is not cached). The container
        // disposes it too: the engine's disposal is idempotent.
        services.TryAddSingleton(provider => provider.GetRequiredService<KvFetcherEngineLoader>().Engine);
        services.TryAddSingleton<IChatClient>(provider => new LoadingChatClient(provider.GetRequiredService<KvFetcherEngineLoader>()));
        return services;
    }

    private static bool Validate(KvFetcherOptions options)
    {
        // Options validation that names the problem: rethrown as OptionsValidationException by the caller otherwise.
        try
        {
            options.Validate();
            return true;
        }
        catch (ArgumentException ex)
        {
            throw new OptionsValidationException(nameof(KvFetcherOptions), typeof(KvFetcherOptions), [ex.Message]);
        }
    }
}
