package certs

import (
	"bytes"
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
func (o *Options) plan(now time.Time, data map[string][]byte, publishedSince func(*x509.Certificate) (time.Time, bool)) (plan, error) {
	p := plan{Data: maps.Clone(data), Next: now.Add(maxRecheck)}
	if p.Data == nil {
		p.Data = map[string][]byte{}
	}
	later := func(t time.Time) {
		if t.Before(p.Next) {
			p.Next = t
		}
	}
	empty := len(data[CACertKey]) == 0 && len(data[CAKeyKey]) == 0 && len(data[TLSCertKey]) == 0 && len(data[TLSKeyKey]) == 0
	repair := func(format string, args ...any) {
		if !empty {
			p.Repairs = append(p.Repairs, fmt.Sprintf(format, args...))
		}
	}

	// The trust bundle: every usable CA in ca.crt.
	parsed, bad := parseCerts(data[CACertKey])
	if bad > 0 {
		repair("%s: dropping %d PEM blocks that are not certificates", CACertKey, bad)
	}
	var cas []*x509.Certificate
	for _, c := range parsed {
		switch {
		case !c.IsCA:
			repair("%s: dropping certificate %s, which is not a CA", CACertKey, serial(c))
		case !now.Before(c.NotAfter):
			p.Rotations = append(p.Rotations, fmt.Sprintf("drop CA %s, expired at %s", serial(c), c.NotAfter.UTC().Format(time.RFC3339)))
		case slices.ContainsFunc(cas, c.Equal):
			repair("%s: dropping a second copy of CA %s", CACertKey, serial(c))
		default:
			cas = append(cas, c)
		}
	}

	// The signer: the CA whose key is ca.key.
	var signer *x509.Certificate
	signerKey, err := parseKey(data[CAKeyKey])
	switch {
	case len(data[CAKeyKey]) == 0:
		repair("%s is missing", CAKeyKey)
	case err != nil:
		repair("%s: %v", CAKeyKey, err)
	default:
		for _, c := range cas {
			if keyMatches(c, signerKey) {
				signer = c
				break
			}
		}
		if signer == nil {
			repair("%s belongs to no unexpired CA in %s", CAKeyKey, CACertKey)
		}
	}
	if signer != nil && !now.Before(signer.NotAfter.Add(-o.CARenewBefore)) {
		p.Rotations = append(p.Rotations, fmt.Sprintf("renew CA %s, which expires at %s", serial(signer), signer.NotAfter.UTC().Format(time.RFC3339)))
		signer = nil
	}
	if signer == nil {
		ca, key, err := newCA(now, o.CAValidity)
		if err != nil {
			return plan{}, err
		}
		signer, signerKey = ca, key
		cas = append([]*x509.Certificate{ca}, cas...)
		if p.Data[CAKeyKey], err = encodeKey(key); err != nil {
			return plan{}, err
		}
		if empty {
			p.Rotations = append(p.Rotations, fmt.Sprintf("create CA %s", serial(ca)))
		}
	}
	later(signer.NotAfter.Add(-o.CARenewBefore))

	// The serving certificate.
	wantDNS, wantIPs := o.SANs()
	var serving *x509.Certificate
	var urgent, due []string
	pair, err := tls.X509KeyPair(data[TLSCertKey], data[TLSKeyKey])
	switch {
	case len(data[TLSCertKey]) == 0 || len(data[TLSKeyKey]) == 0:
		urgent = append(urgent, fmt.Sprintf("%s or %s is missing", TLSCertKey, TLSKeyKey))
	case err != nil:
		urgent = append(urgent, fmt.Sprintf("serving pair is unusable: %v", err))
	default:
		serving = pair.Leaf
		issuer := slices.IndexFunc(cas, func(ca *x509.Certificate) bool { return issuedBy(serving, ca) })
		switch {
		case !validAt(serving, now):
			urgent = append(urgent, fmt.Sprintf("serving certificate %s is valid only from %s to %s", serial(serving),
				serving.NotBefore.UTC().Format(time.RFC3339), serving.NotAfter.UTC().Format(time.RFC3339)))
		case issuer < 0:
			urgent = append(urgent, fmt.Sprintf("serving certificate %s was issued by no CA in %s", serial(serving), CACertKey))
		case !slices.Contains(serving.ExtKeyUsage, x509.ExtKeyUsageServerAuth):
			urgent = append(urgent, fmt.Sprintf("serving certificate %s is not for server authentication", serial(serving)))
		default:
			if !sameSANs(serving, wantDNS, wantIPs) {
				due = append(due, fmt.Sprintf("serving certificate %s has names %v, want %v", serial(serving), sans(serving.DNSNames, serving.IPAddresses), sans(wantDNS, wantIPs)))
			}
			if renew := serving.NotAfter.Add(-o.CertRenewBefore); !now.Before(renew) {
				due = append(due, fmt.Sprintf("renew serving certificate %s, which expires at %s", serial(serving), serving.NotAfter.UTC().Format(time.RFC3339)))
			} else {
				later(renew)
			}
			later(serving.NotAfter)
			if cas[issuer] != signer {
				due = append(due, fmt.Sprintf("switch serving certificate %s to CA %s", serial(serving), serial(signer)))
			}
		}
	}
	issue := len(urgent) > 0
	if len(due) > 0 {
		// A new serving certificate from the signer must be trusted everywhere before anyone serves it.
		if serving != nil && issuedBy(serving, signer) {
			issue = true
		} else if since, ok := publishedSince(signer); !ok {
			// Publication wakes the caller; nothing to time here.
		} else if switchAt := latest(created(signer), since).Add(o.PropagationDelay); !now.Before(switchAt) {
			issue = true
		} else {
			later(switchAt)
		}
	}
	if issue {
		cert, key, err := newServing(now, o.CertValidity, signer, signerKey, wantDNS, wantIPs)
		if err != nil {
			return plan{}, err
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			return plan{}, err
		}
		p.Data[TLSCertKey], p.Data[TLSKeyKey] = encodeCerts(cert), keyPEM
		serving = cert
		for _, r := range urgent {
			repair("%s", r)
		}
		p.Rotations = append(p.Rotations, due...)
		p.Rotations = append(p.Rotations, fmt.Sprintf("issue serving certificate %s from CA %s", serial(cert), serial(signer)))
		later(cert.NotAfter.Add(-o.CertRenewBefore))
	}

	// The bundle keeps the signer and the serving certificate's issuer; any other CA only until every replica
	// has had PropagationDelay to switch to the current serving certificate.
	keepAll := now.Before(created(serving).Add(o.PropagationDelay))
	var others []*x509.Certificate
	for _, ca := range cas {
		switch {
		case ca == signer:
			continue
		case issuedBy(serving, ca):
		case keepAll:
			later(ca.NotAfter)
			later(created(serving).Add(o.PropagationDelay))
		default:
			p.Rotations = append(p.Rotations, fmt.Sprintf("drop CA %s, which signs nothing in use", serial(ca)))
			continue
		}
		others = append(others, ca)
	}
	later(signer.NotAfter)
	// The signer first, then the others newest first: every replica must write the same bytes.
	sort.Slice(others, func(i, j int) bool {
		a, b := others[i], others[j]
		if !a.NotAfter.Equal(b.NotAfter) {
			return a.NotAfter.After(b.NotAfter)
		}
		return bytes.Compare(a.Raw, b.Raw) < 0
	})
	p.Data[CACertKey] = encodeCerts(append([]*x509.Certificate{signer}, others...)...)
	if !p.Changed() && !bytes.Equal(p.Data[CACertKey], data[CACertKey]) {
		repair("%s: rewriting in canonical form", CACertKey)
	}
	if !p.Next.After(now) {
		p.Next = now.Add(time.Second)
	}
	return p, nil
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
