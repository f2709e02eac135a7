using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace KvFetcher.Tests;

/// <summary>Self-signed certificates for TLS tests.</summary>
internal static class TestCertificates
{
    /// <summary>Writes a P-256 certificate for 127.0.0.1 and its key as PEM files into <paramref name="directory"/>.</summary>
    public static (string CertFile, string KeyFile) WriteSelfSigned(string directory)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=kvfetch-test", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        using X509Certificate2 certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        string certFile = Path.Combine(directory, "cert.pem");
        string keyFile = Path.Combine(directory, "key.pem");
        File.WriteAllText(certFile, certificate.ExportCertificatePem());
        File.WriteAllText(keyFile, key.ExportPkcs8PrivateKeyPem());
        return (certFile, keyFile);
    }
}
