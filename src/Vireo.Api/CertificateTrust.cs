using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Vireo.Api;

/// <summary>
/// Whether a TLS peer's certificate chains to given roots and to nothing else (not the host's
/// trust store), valid now: vireod checks clients' certificates against --tls-client-ca this way,
/// and `vireo` vireod's against --ca-file.
/// </summary>
public static class CertificateTrust
{
    /// <summary>The clientAuth extended key use: a certificate that names its uses must name this to log a client in.</summary>
    public const string ClientAuth = "1.3.6.1.5.5.7.3.2";

    public static bool ChainsTo(X509Certificate2 certificate, X509Certificate2Collection roots, string? purpose = null)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(roots);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck; // no CRL or OCSP to reach on a host with no internet
        if (purpose is not null)
        {
            chain.ChainPolicy.ApplicationPolicy.Add(new Oid(purpose));
        }
        return chain.Build(certificate);
    }
}
