using Microsoft.AspNetCore.Http;

namespace KvFetcher.Hosting.Tests;

/// <summary>Which <c>Authorization</c> headers the one bearer check accepts.</summary>
public sealed class BearerTokensTests
{
    private const string Token = "the-token-0123456789";

    [Theory]
    [InlineData("Bearer the-token-0123456789", true)]
    [InlineData("bearer the-token-0123456789", true)]
    [InlineData("Bearer   the-token-0123456789  ", true)]
    [InlineData(null, false)]
    [InlineData("", false)]
    [InlineData("Bearer ", false)]
    [InlineData("Bearer the-token-012345678", false)]
    [InlineData("Bearer the-token-01234567890", false)]
    [InlineData("Basic the-token-0123456789", false)]
    [InlineData("the-token-0123456789", false)]
    public void IsAuthorized_OneAcceptedToken_AcceptsExactlyThatToken(string? header, bool expected)
    {
        var tokens = new BearerTokens([Token]);

        Assert.Equal(expected, tokens.IsAuthorized(Request(header)));
    }

    [Fact]
    public void IsAuthorized_SeveralAccepted_AcceptsEachOfThem()
    {
        var tokens = new BearerTokens(["first-key-0123", "second-key-0123"]);

        Assert.True(tokens.IsAuthorized(Request("Bearer first-key-0123")));
        Assert.True(tokens.IsAuthorized(Request("Bearer second-key-0123")));
        Assert.False(tokens.IsAuthorized(Request("Bearer third-key-0123")));
    }

    [Fact]
    public void IsAuthorized_TwoAuthorizationHeaders_Refused()
    {
        var tokens = new BearerTokens([Token]);
        var context = new DefaultHttpContext();
        context.Request.Headers.Authorization = new Microsoft.Extensions.Primitives.StringValues([$"Bearer {Token}", $"Bearer {Token}"]);

        Assert.False(tokens.IsAuthorized(context.Request));
    }

    [Fact]
    public void IsAuthorized_TokenLongerThanTheLimit_RefusedEvenIfAccepted()
    {
        string longest = new('a', BearerTokens.MaxTokenChars);
        string tooLong = new('a', BearerTokens.MaxTokenChars + 1);
        var tokens = new BearerTokens([longest, tooLong]);

        Assert.True(tokens.IsAuthorized(Request($"Bearer {longest}")));
        Assert.False(tokens.IsAuthorized(Request($"Bearer {tooLong}")));
        Assert.Null(BearerTokens.Presented(Request($"Bearer {tooLong}")));
    }

    [Fact]
    public void IsAuthorized_NoAcceptedList_RequiredOnlyWhenAsked()
    {
        var open = new BearerTokens(accepted: null);
        var anyToken = new BearerTokens(accepted: null, required: true);

        Assert.True(open.IsAuthorized(Request(null)));
        Assert.True(open.IsAuthorized(Request("Basic x")));
        Assert.False(anyToken.IsAuthorized(Request(null)));
        Assert.False(anyToken.IsAuthorized(Request("Bearer ")));
        Assert.True(anyToken.IsAuthorized(Request("Bearer anything-at-all")));
    }

    [Fact]
    public void Presented_BearerHeader_GivesTheTrimmedToken()
    {
        Assert.Equal(Token, BearerTokens.Presented(Request($"BEARER  {Token} ")));
        Assert.Null(BearerTokens.Presented(Request(null)));
        Assert.Null(BearerTokens.Presented(Request($"Token {Token}")));
    }

    private static HttpRequest Request(string? authorization)
    {
        var context = new DefaultHttpContext();
        if (authorization is not null)
        {
            context.Request.Headers.Authorization = authorization;
        }

        return context.Request;
    }
}
