using System.Security.Cryptography.X509Certificates;

namespace Vireo.Daemon.Access;

/// <summary>
/// A TLS client's certificate (--tls-client-ca): trusted when it chains to one of the CA's
/// certificates, and to nothing else (not the host's own trust store), and is valid now. Its
/// subject's CN names the vireod user it stands for (<see cref="Authentication"/>).
/// </summary>
internal static class ClientCertificate
{
    public static bool Trusted(X509Certificate2 certificate, X509Certificate2Collection? ca)
    {
        if (ca is null)
        {
            return false;
        }
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck; // no CRL or OCSP to reach on a host with no internet
        chain.ChainPolicy.ApplicationPolicy.Add(new System.Security.Cryptography.Oid("1.3.6.1.5.5.7.3.2")); // clientAuth, where the certificate says what it is for
        return chain.Build(certificate);
    }
}
