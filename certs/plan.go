package certs

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Keys of the certificate Secret. tls.crt and tls.key are the serving pair, as in a kubernetes.io/tls
// Secret; ca.crt is the trust bundle written into caBundle, ca.key the key of the CA that signs new serving
// certificates (the first one in ca.crt).
const (
	CACertKey  = "ca.crt"
	CAKeyKey   = "ca.key"
	TLSCertKey = corev1.TLSCertKey
	TLSKeyKey  = corev1.TLSPrivateKeyKey
)

// maxRecheck bounds the time between two looks at the certificates, whatever the plan says.
const maxRecheck = time.Hour

// plan is what the certificate Secret should hold, and why it changed.
type plan struct {
	// Data is the Secret's desired data.
	Data map[string][]byte
	// Repairs lists problems with the Secret's content that the plan fixes.
	Repairs []string
	// Rotations lists the planned steps of a normal renewal.
	Rotations []string
	// Next is when the plan must be made again even if nothing changes.
	Next time.Time
}

// Changed reports whether the Secret must be written.
func (p plan) Changed() bool {
	return len(p.Repairs)+len(p.Rotations) > 0
}

// plan decides, from the Secret's data at now, what it must hold: it repairs what is unusable, renews the
// CA and the serving certificate ahead of expiry, and stages a CA rotation. publishedSince reports since
// when a CA has been seen in the caBundle of every webhook, and false if it is not there now. The serving
// certificate switches to a new CA only once the CA has existed and been published for PropagationDelay,
// and a replaced CA stays in the bundle for PropagationDelay after the switch, so that every API server
// trusts whatever every replica serves.
//
// The steps run in this order because each decides from what the one before chose: the CAs of ca.crt worth
// keeping, the signer among them (or a new one), the serving certificate (kept, or issued from the signer),
// and last which CAs the bundle still needs beside the signer.
func (o *Options) plan(now time.Time, data map[string][]byte, publishedSince func(*x509.Certificate) (time.Time, bool)) (plan, error) {
	pl := &planning{o: o, now: now, data: data, p: plan{Data: maps.Clone(data), Next: now.Add(maxRecheck)}}
	if pl.p.Data == nil {
		pl.p.Data = map[string][]byte{}
	}
	pl.empty = len(data[CACertKey]) == 0 && len(data[CAKeyKey]) == 0 && len(data[TLSCertKey]) == 0 && len(data[TLSKeyKey]) == 0

	cas := pl.usableCAs()
	signer, signerKey, cas, err := pl.signer(cas)
	if err != nil {
		return plan{}, err
	}
	serving, err := pl.serving(cas, signer, signerKey, publishedSince)
	if err != nil {
		return plan{}, err
	}
	pl.bundle(cas, signer, serving)
	if !pl.p.Next.After(now) {
		pl.p.Next = now.Add(time.Second)
	}
	return pl.p, nil
}

// planning is one run of Options.plan: what every step reads, and the plan the steps build.
type planning struct {
	o    *Options
	now  time.Time
	data map[string][]byte
	// empty is true when the Secret holds none of the four keys: what the plan creates then is the first
	// set, not a repair.
	empty bool
	p     plan
}

// later brings the plan's next look forward to t, if t is sooner.
func (pl *planning) later(t time.Time) {
	if t.Before(pl.p.Next) {
		pl.p.Next = t
	}
}

// repair records a problem the plan fixes, unless the Secret is empty and there is nothing to repair.
func (pl *planning) repair(format string, args ...any) {
	if !pl.empty {
		pl.p.Repairs = append(pl.p.Repairs, fmt.Sprintf(format, args...))
	}
}

// rotate records a step of a normal renewal.
func (pl *planning) rotate(format string, args ...any) {
	pl.p.Rotations = append(pl.p.Rotations, fmt.Sprintf(format, args...))
}

// usableCAs decides which certificates of ca.crt stay candidates for the trust bundle: the CAs that have not
// expired, each once.
func (pl *planning) usableCAs() []*x509.Certificate {
	parsed, bad := parseCerts(pl.data[CACertKey])
	if bad > 0 {
		pl.repair("%s: dropping %d PEM blocks that are not certificates", CACertKey, bad)
	}
	var cas []*x509.Certificate
	for _, c := range parsed {
		switch {
		case !c.IsCA:
			pl.repair("%s: dropping certificate %s, which is not a CA", CACertKey, serial(c))
		case !pl.now.Before(c.NotAfter):
			pl.rotate("drop CA %s, expired at %s", serial(c), c.NotAfter.UTC().Format(time.RFC3339))
		case slices.ContainsFunc(cas, c.Equal):
			pl.repair("%s: dropping a second copy of CA %s", CACertKey, serial(c))
		default:
			cas = append(cas, c)
		}
	}
	return cas
}

// signer decides which CA signs serving certificates: the one of cas whose key is ca.key, unless it is due
// for renewal or there is none, and then a new CA, which it puts first in the cas it returns.
func (pl *planning) signer(cas []*x509.Certificate) (*x509.Certificate, crypto.Signer, []*x509.Certificate, error) {
	signer, signerKey := pl.currentSigner(cas)
	if signer != nil && !pl.now.Before(signer.NotAfter.Add(-pl.o.CARenewBefore)) {
		pl.rotate("renew CA %s, which expires at %s", serial(signer), signer.NotAfter.UTC().Format(time.RFC3339))
		signer = nil
	}
	if signer == nil {
		ca, key, err := newCA(pl.now, pl.o.CAValidity)
		if err != nil {
			return nil, nil, nil, err
		}
		signer, signerKey = ca, key
		cas = append([]*x509.Certificate{ca}, cas...)
		if pl.p.Data[CAKeyKey], err = encodeKey(key); err != nil {
			return nil, nil, nil, err
		}
		if pl.empty {
			pl.rotate("create CA %s", serial(ca))
		}
	}
	pl.later(signer.NotAfter.Add(-pl.o.CARenewBefore))
	return signer, signerKey, cas, nil
}

// currentSigner returns the CA of cas whose key is ca.key, and the key; nil when there is none.
func (pl *planning) currentSigner(cas []*x509.Certificate) (*x509.Certificate, crypto.Signer) {
	signerKey, err := parseKey(pl.data[CAKeyKey])
	switch {
	case len(pl.data[CAKeyKey]) == 0:
		pl.repair("%s is missing", CAKeyKey)
	case err != nil:
		pl.repair("%s: %v", CAKeyKey, err)
	default:
		for _, c := range cas {
			if keyMatches(c, signerKey) {
				return c, signerKey
			}
		}
		pl.repair("%s belongs to no unexpired CA in %s", CAKeyKey, CACertKey)
	}
	return nil, nil
}

// serving decides which serving certificate the Secret holds: the current one, or a new one from signer
// when the current one is unusable (at once) or due for renewal, new names or the signer (once the signer is
// trusted everywhere). It returns the certificate the plan keeps.
func (pl *planning) serving(cas []*x509.Certificate, signer *x509.Certificate, signerKey crypto.Signer,
	publishedSince func(*x509.Certificate) (time.Time, bool)) (*x509.Certificate, error) {
	wantDNS, wantIPs := pl.o.SANs()
	serving, urgent, due := pl.servingProblems(cas, signer, wantDNS, wantIPs)
	if !pl.issueNow(serving, signer, len(urgent) > 0, len(due) > 0, publishedSince) {
		return serving, nil
	}
	cert, key, err := newServing(pl.now, pl.o.CertValidity, signer, signerKey, wantDNS, wantIPs)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	pl.p.Data[TLSCertKey], pl.p.Data[TLSKeyKey] = encodeCerts(cert), keyPEM
	for _, r := range urgent {
		pl.repair("%s", r)
	}
	pl.p.Rotations = append(pl.p.Rotations, due...)
	pl.rotate("issue serving certificate %s from CA %s", serial(cert), serial(signer))
	pl.later(cert.NotAfter.Add(-pl.o.CertRenewBefore))
	return cert, nil
}

// servingProblems returns the Secret's serving certificate, nil when the pair is unusable, with what makes
// it unfit to serve (urgent) and what makes it due for replacement while it still serves (due).
func (pl *planning) servingProblems(cas []*x509.Certificate, signer *x509.Certificate, wantDNS []string, wantIPs []net.IP) (
	serving *x509.Certificate, urgent, due []string) {
	pair, err := tls.X509KeyPair(pl.data[TLSCertKey], pl.data[TLSKeyKey])
	switch {
	case len(pl.data[TLSCertKey]) == 0 || len(pl.data[TLSKeyKey]) == 0:
		return nil, []string{fmt.Sprintf("%s or %s is missing", TLSCertKey, TLSKeyKey)}, nil
	case err != nil:
		return nil, []string{fmt.Sprintf("serving pair is unusable: %v", err)}, nil
	}
	serving = pair.Leaf
	issuer := slices.IndexFunc(cas, func(ca *x509.Certificate) bool { return issuedBy(serving, ca) })
	switch {
	case !validAt(serving, pl.now):
		return serving, []string{fmt.Sprintf("serving certificate %s is valid only from %s to %s", serial(serving),
			serving.NotBefore.UTC().Format(time.RFC3339), serving.NotAfter.UTC().Format(time.RFC3339))}, nil
	case issuer < 0:
		return serving, []string{fmt.Sprintf("serving certificate %s was issued by no CA in %s", serial(serving), CACertKey)}, nil
	case !slices.Contains(serving.ExtKeyUsage, x509.ExtKeyUsageServerAuth):
		return serving, []string{fmt.Sprintf("serving certificate %s is not for server authentication", serial(serving))}, nil
	}
	if !sameSANs(serving, wantDNS, wantIPs) {
		due = append(due, fmt.Sprintf("serving certificate %s has names %v, want %v", serial(serving), sans(serving.DNSNames, serving.IPAddresses), sans(wantDNS, wantIPs)))
	}
	if renew := serving.NotAfter.Add(-pl.o.CertRenewBefore); !pl.now.Before(renew) {
		due = append(due, fmt.Sprintf("renew serving certificate %s, which expires at %s", serial(serving), serving.NotAfter.UTC().Format(time.RFC3339)))
	} else {
		pl.later(renew)
	}
	pl.later(serving.NotAfter)
	if cas[issuer] != signer {
		due = append(due, fmt.Sprintf("switch serving certificate %s to CA %s", serial(serving), serial(signer)))
	}
	return serving, nil, due
}

// issueNow decides whether to issue a serving certificate now: at once when the current one is unfit
// (urgent); when it is only due, once a certificate from signer is trusted everywhere, that is when the
// current one already comes from signer, or signer has existed and been published for PropagationDelay.
func (pl *planning) issueNow(serving, signer *x509.Certificate, urgent, due bool, publishedSince func(*x509.Certificate) (time.Time, bool)) bool {
	if urgent {
		return true
	}
	if !due {
		return false
	}
	if serving != nil && issuedBy(serving, signer) {
		return true
	}
	since, ok := publishedSince(signer)
	if !ok {
		// Publication wakes the caller; nothing to time here.
		return false
	}
	switchAt := latest(created(signer), since).Add(pl.o.PropagationDelay)
	if !pl.now.Before(switchAt) {
		return true
	}
	pl.later(switchAt)
	return false
}

// bundle decides which CAs ca.crt keeps and writes it: the signer and the serving certificate's issuer; any
// other CA only until every replica has had PropagationDelay to switch to the current serving certificate.
func (pl *planning) bundle(cas []*x509.Certificate, signer, serving *x509.Certificate) {
	keepAll := pl.now.Before(created(serving).Add(pl.o.PropagationDelay))
	var others []*x509.Certificate
	for _, ca := range cas {
		switch {
		case ca == signer:
			continue
		case issuedBy(serving, ca):
		case keepAll:
			pl.later(ca.NotAfter)
			pl.later(created(serving).Add(pl.o.PropagationDelay))
		default:
			pl.rotate("drop CA %s, which signs nothing in use", serial(ca))
			continue
		}
		others = append(others, ca)
	}
	pl.later(signer.NotAfter)
	// The signer first, then the others newest first: every replica must write the same bytes.
	sort.Slice(others, func(i, j int) bool {
		a, b := others[i], others[j]
		if !a.NotAfter.Equal(b.NotAfter) {
			return a.NotAfter.After(b.NotAfter)
		}
		return bytes.Compare(a.Raw, b.Raw) < 0
	})
	pl.p.Data[CACertKey] = encodeCerts(append([]*x509.Certificate{signer}, others...)...)
	if !pl.p.Changed() && !bytes.Equal(pl.p.Data[CACertKey], pl.data[CACertKey]) {
		pl.repair("%s: rewriting in canonical form", CACertKey)
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// sameSANs reports whether c carries exactly the DNS names and IP addresses given, in any order.
func sameSANs(c *x509.Certificate, dnsNames []string, ips []net.IP) bool {
	got, want := sans(c.DNSNames, c.IPAddresses), sans(dnsNames, ips)
	slices.Sort(got)
	slices.Sort(want)
	return slices.Equal(slices.Compact(got), slices.Compact(want))
}

func sans(dnsNames []string, ips []net.IP) []string {
	out := slices.Clone(dnsNames)
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// serial returns c's serial number as logged and reported.
func serial(c *x509.Certificate) string {
	return c.SerialNumber.Text(16)
}
