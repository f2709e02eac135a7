using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace KvFetcher.Serving.Extensions;

/// <summary>
/// Registers KvFetcher in a service collection: <c>services.AddKvFetcher(configuration.GetSection("KvFetcher"))</c>
/// binds <see cref="KvFetcherOptions"/> (validated on first use), and adds a singleton <see cref="KvFetcherEngine"/>
/// (the model loaded, the store opened, on first resolution) and <see cref="IChatClient"/> over it.
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
        services.AddOptions<KvFetcherOptions>().Validate(Validate, "KvFetcher options are invalid.");
        // The container disposes the engine (IAsyncDisposable) when it is disposed.
        services.AddSingleton(provider =>
            KvFetcherEngine.StartAsync(provider.GetRequiredService<IOptions<KvFetcherOptions>>().Value).GetAwaiter().GetResult());
        services.AddSingleton<IChatClient>(provider => new KvFetcherChatClient(provider.GetRequiredService<KvFetcherEngine>()));
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
