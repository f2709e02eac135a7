using System.Net;
using System.Security.Cryptography.X509Certificates;
using KvFetcher.Serving.Chat;

namespace KvFetcher.Serving.Tests;

/// <summary>serve-llm over TLS: the same API on https, a certificate required for https URLs and refused without them.</summary>
public sealed class TlsTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    [Fact]
    public async Task Https_ChatOverTls_SameAnswerAsFullPrefill()
    {
        string directory = Directory.CreateTempSubdirectory("kvf-llm-tls-").FullName;
        try
        {
            (string cert, string key) = KvFetcher.Tests.TestCertificates.WriteSelfSigned(directory);
            await using LlmServer server = await LlmServer.StartAsync(new LlmServerOptions
            {
                Engine = fixture.EngineOptions(store: null),
                Urls = ["https://127.0.0.1:0"],
                CertificateFile = cert,
                CertificateKeyFile = key,
            }, TestContext.Current.CancellationToken);
            Uri address = server.Addresses[0];
            Assert.Equal("https", address.Scheme);

            using X509Certificate2 trusted = X509Certificate2.CreateFromPemFile(cert, key);
            using var handler = new HttpClientHandler
            {
                // Trust exactly the test's self-signed certificate.
                ServerCertificateCustomValidationCallback = (_, presented, _, _) => presented is not null && presented.Thumbprint == trusted.Thumbprint,
            };
            using var http = new HttpClient(handler) { BaseAddress = address, Timeout = TimeSpan.FromSeconds(60) };
            ChatTurn[] turns = fixture.Question("What does this document describe?");
            string body = $$"""{"model":"{{ServingFixture.ModelId}}","max_tokens":8,"temperature":0,"messages":[{"role":"system","content":{{System.Text.Json.JsonSerializer.Serialize(turns[0].Content)}}},{"role":"user","content":{{System.Text.Json.JsonSerializer.Serialize(turns[1].Content)}}}]}""";
            using HttpResponseMessage response = await http.PostAsync("/v1/chat/completions", new StringContent(body, System.Text.Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken);

            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var json = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
            Assert.Equal(fixture.GreedyChat(turns, 8), json.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());

            // A plain-http client gets no answer from the TLS port.
            using var plain = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
            await Assert.ThrowsAnyAsync<HttpRequestException>(() => plain.GetAsync(new UriBuilder(address) { Scheme = "http" }.Uri, TestContext.Current.CancellationToken));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void Https_WithoutCertificate_RefusedBeforeBinding()
    {
        var options = new LlmServerOptions { Engine = fixture.EngineOptions(store: null), Urls = ["https://127.0.0.1:0"] };
        ArgumentException refused = Assert.Throws<ArgumentException>(options.Validate);
        Assert.Contains("certificate", refused.Message, StringComparison.Ordinal);

        var stray = new LlmServerOptions { Engine = fixture.EngineOptions(store: null), Urls = ["http://127.0.0.1:0"], CertificateFile = "cert.pem", CertificateKeyFile = "key.pem" };
        Assert.Throws<ArgumentException>(stray.Validate);
    }
}
