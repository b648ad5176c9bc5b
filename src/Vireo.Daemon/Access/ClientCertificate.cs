using System.Security.Cryptography.X509Certificates;
using Vireo.Api;

namespace Vireo.Daemon.Access;

/// <summary>
/// A TLS client's certificate (--tls-client-ca): trusted when it chains to one of the CA's
/// certificates, and to nothing else, is valid now and, if it names its uses, is for clientAuth.
/// Its subject's CN names the vireod user it stands for (<see cref="Authentication"/>).
/// </summary>
internal static class ClientCertificate
{
    public static bool Trusted(X509Certificate2 certificate, X509Certificate2Collection? ca) =>
        ca is not null && CertificateTrust.ChainsTo(certificate, ca, CertificateTrust.ClientAuth);
}
