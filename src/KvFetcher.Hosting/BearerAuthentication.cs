using System.Security.Claims;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace KvFetcher.Hosting;

/// <summary>
/// Deny by default for KvFetcher's servers, with ASP.NET Core's own authentication and authorization: a bearer
/// authentication scheme over <see cref="BearerTokens"/>, and a fallback policy that requires an authenticated caller
/// for every endpoint that does not allow anonymous ones (<c>AllowAnonymous()</c>: the public list). Authorization runs
/// after routing, on the endpoint that matched, so no spelling of a path (case, percent-encoding, slashes) reaches a
/// route without the check, and a path that matches nothing is refused (401) before it is found missing (404).
/// </summary>
public static class BearerAuthentication
{
    /// <summary>The authentication scheme's name (and the <c>WWW-Authenticate</c> challenge).</summary>
    public const string Scheme = "Bearer";

    /// <summary>
    /// Registers the scheme and the fallback policy. <paramref name="writeUnauthorizedAsync"/> writes the 401 in the
    /// server's own error format (the status and <c>WWW-Authenticate: Bearer</c> are set before it runs).
    /// </summary>
    public static IServiceCollection AddBearerAuthentication(this IServiceCollection services, BearerTokens tokens, Func<HttpContext, Task> writeUnauthorizedAsync)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(writeUnauthorizedAsync);
        services.AddAuthentication(Scheme).AddScheme<BearerAuthenticationOptions, BearerAuthenticationHandler>(Scheme, o =>
        {
            o.Tokens = tokens;
            o.WriteUnauthorizedAsync = writeUnauthorizedAsync;
        });
        services.AddAuthorizationBuilder().SetFallbackPolicy(new AuthorizationPolicyBuilder(Scheme).RequireAuthenticatedUser().Build());
        return services;
    }

    /// <summary>Routing, then authentication and authorization of the matched endpoint; middleware added after this sees only allowed requests.</summary>
    public static IApplicationBuilder UseBearerAuthentication(this IApplicationBuilder app)
    {
        ArgumentNullException.ThrowIfNull(app);
        return app.UseRouting().UseAuthentication().UseAuthorization();
    }

    internal sealed class BearerAuthenticationOptions : AuthenticationSchemeOptions
    {
        public BearerTokens Tokens { get; set; } = new(accepted: [], required: true);

        public Func<HttpContext, Task> WriteUnauthorizedAsync { get; set; } = _ => Task.CompletedTask;
    }

    internal sealed class BearerAuthenticationHandler(IOptionsMonitor<BearerAuthenticationOptions> options, ILoggerFactory logger, UrlEncoder encoder)
        : AuthenticationHandler<BearerAuthenticationOptions>(options, logger, encoder)
    {
        protected override Task<AuthenticateResult> HandleAuthenticateAsync()
        {
            if (!Options.Tokens.IsAuthorized(Request))
            {
                return Task.FromResult(AuthenticateResult.NoResult());
            }

            var caller = new ClaimsPrincipal(new ClaimsIdentity(authenticationType: Scheme.Name));
            return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(caller, Scheme.Name)));
        }

        protected override Task HandleChallengeAsync(AuthenticationProperties properties)
        {
            if (Logger.IsEnabled(LogLevel.Information))
            {
                string remote = Context.Connection.RemoteIpAddress?.ToString() ?? "?";
                string reason = Request.Headers.Authorization.Count == 0 ? "no Authorization header" : "a token that is not accepted";
                HostingLog.Unauthorized(Logger, Request.Method, Request.Path.Value ?? "", remote, reason);
            }

            Response.StatusCode = StatusCodes.Status401Unauthorized;
            Response.Headers.WWWAuthenticate = BearerAuthentication.Scheme;
            return Options.WriteUnauthorizedAsync(Context);
        }
    }
}
