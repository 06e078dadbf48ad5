// Package push uploads an OCI image layout's image to a registry and
// publishes its simple signing signatures in a lookaside tree.
//
// # Upload
//
// The layout is read as hostile input: index.json, the manifest and the
// config are bounded in size, name their blobs by SHA-256 only, and are
// checked against their digests before anything is sent; each layer blob
// is checked against its descriptor's size before it is opened and
// against its digest while it is uploaded, so that a changed blob fails
// the push before the registry commits it. The manifest is pushed as its
// very bytes, so the image has in the registry the digest it has in the
// layout (and its signatures name), and the layer blobs as they are,
// never recompressed. Blobs the repository has already (a HEAD answers
// 200) are not sent: a second app on the same layers uploads only its own
// layer, its config and its manifest. The uploading itself is
// go-containerregistry's remote.Write.
//
// # Registries
//
// Credentials come from the docker and podman configuration files, as
// docker login and podman login write them (go-containerregistry's
// default keychain). A registry on this machine (localhost or a loopback
// address) is spoken to over plain HTTP when it does not answer HTTPS;
// any other only over HTTPS with a certificate that verifies, unless
// Insecure is set.
//
// # Signatures
//
// Registries keep no simple signing signatures: clients read them from a
// lookaside tree (see ocisign). A signature names the image as it is
// pulled, so the one that counts names the destination reference: with a
// key, push signs the pushed reference; without one, it takes the
// image's signatures that already name the destination (from the
// lookaside tree beside the layout, where a signing build puts them).
// Either way they are written into the lookaside tree the registry's
// lookaside URL serves, after the image is in the registry.
package push
