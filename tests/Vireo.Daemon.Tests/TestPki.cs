using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Vireo.Daemon.Tests;

/// <summary>A CA, a server certificate for 127.0.0.1 and client certificates, made here and written as PEM files for vireod's TLS.</summary>
internal sealed class TestPki
{
    public string Dir { get; }
    public X509Certificate2 Ca { get; }
    public string CaFile => Path.Combine(Dir, "ca.pem");
    public string CertFile => Path.Combine(Dir, "server.pem");
    public string KeyFile => Path.Combine(Dir, "server.key");

    public TestPki(string dir)
    {
        Dir = dir;
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=vireo test CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        Ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-10), DateTimeOffset.UtcNow.AddDays(2)); // outlives what it signs
        File.WriteAllText(CaFile, Ca.ExportCertificatePem());
        var (server, serverKey) = Issue("CN=127.0.0.1", serverAuth: true);
        File.WriteAllText(CertFile, server.ExportCertificatePem());
        File.WriteAllText(KeyFile, serverKey.ExportPkcs8PrivateKeyPem());
    }

    /// <summary>A certificate the CA signs: a server's for 127.0.0.1, or a client's.</summary>
    public (X509Certificate2 Certificate, ECDsa Key) Issue(string subject, bool serverAuth, X509Certificate2? issuer = null)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [new Oid(serverAuth ? "1.3.6.1.5.5.7.3.1" : "1.3.6.1.5.5.7.3.2")], false));
        if (serverAuth)
        {
            var san = new SubjectAlternativeNameBuilder();
            san.AddIpAddress(IPAddress.Loopback);
            request.CertificateExtensions.Add(san.Build());
        }
        issuer ??= Ca;
        using var cert = request.Create(issuer, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1), RandomNumberGenerator.GetBytes(8));
        return (cert.CopyWithPrivateKey(key), key);
    }

    /// <summary>An HTTPS client to vireod that trusts this CA only, optionally presenting a client certificate.</summary>
    public HttpClient Client(int port, X509Certificate2? clientCertificate = null)
    {
        var handler = new SocketsHttpHandler();
        handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
        {
            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(Ca);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            return certificate is not null && chain.Build(new X509Certificate2(certificate))
                && (errors & System.Net.Security.SslPolicyErrors.RemoteCertificateNameMismatch) == 0;
        };
        if (clientCertificate is not null)
        {
            // A certificate with an ephemeral key must be exported and loaded again for SslStream to use it.
            handler.SslOptions.ClientCertificates = [X509CertificateLoader.LoadPkcs12(clientCertificate.Export(X509ContentType.Pkcs12), null)];
        }
        return new HttpClient(handler) { BaseAddress = new Uri($"https://127.0.0.1:{port}/") };
    }
}
