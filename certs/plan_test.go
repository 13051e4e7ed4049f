package certs

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// testOptions renews the CA at 2h, each serving certificate at half its 1h life, and switches CAs 10m
// after publication.
func testOptions() Options {
	return Options{
		Mode: ModeSelf, ServiceName: "psi", ServiceNamespace: "system", SecretName: "psi-tls", WebhookConfigName: "psi",
		ExtraSANs:  []string{"127.0.0.1", "webhook.example.com"},
		CAValidity: 3 * time.Hour, CARenewBefore: time.Hour,
		CertValidity: time.Hour, CertRenewBefore: 30 * time.Minute,
		PropagationDelay: 10 * time.Minute,
	}
}

// never is a publishedSince for a webhook configuration that trusts nothing.
func never(*x509.Certificate) (time.Time, bool) { return time.Time{}, false }

// publishedAt is a publishedSince under which every CA has been published since at.
func publishedAt(at time.Time) func(*x509.Certificate) (time.Time, bool) {
	return func(*x509.Certificate) (time.Time, bool) { return at, true }
}

func mustPlan(t *testing.T, o Options, now time.Time, data map[string][]byte, published func(*x509.Certificate) (time.Time, bool)) plan {
	t.Helper()
	if err := o.Validate(); err != nil {
		t.Fatalf("test options: %v", err)
	}
	p, err := o.plan(now, data, published)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// contents summarises a Secret's data for comparison.
type contents struct {
	// CAs are the ca.crt serials, signer first.
	CAs []string
	// Signer is the serial of the CA whose key is ca.key.
	Signer string
	// Serving is the serving certificate's serial, Issuer its CA's.
	Serving, Issuer string
}

func inspect(t *testing.T, data map[string][]byte) contents {
	t.Helper()
	var c contents
	cas, bad := parseCerts(data[CACertKey])
	if bad > 0 {
		t.Errorf("ca.crt has %d bad blocks", bad)
	}
	key, err := parseKey(data[CAKeyKey])
	if err != nil {
		t.Fatalf("ca.key: %v", err)
	}
	for _, ca := range cas {
		c.CAs = append(c.CAs, serial(ca))
		if keyMatches(ca, key) {
			c.Signer = serial(ca)
		}
	}
	pair, err := tls.X509KeyPair(data[TLSCertKey], data[TLSKeyKey])
	if err != nil {
		t.Fatalf("serving pair: %v", err)
	}
	c.Serving = serial(pair.Leaf)
	for _, ca := range cas {
		if issuedBy(pair.Leaf, ca) {
			c.Issuer = serial(ca)
		}
	}
	return c
}

func leafOf(t *testing.T, data map[string][]byte) *x509.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(data[TLSCertKey], data[TLSKeyKey])
	if err != nil {
		t.Fatalf("serving pair: %v", err)
	}
	return pair.Leaf
}

func withData(data map[string][]byte, key string, value []byte) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range data {
		out[k] = v
	}
	if value == nil {
		delete(out, key)
	} else {
		out[key] = value
	}
	return out
}

func TestPlanFromNothing(t *testing.T) {
	o := testOptions()
	p := mustPlan(t, o, t0, nil, never)
	if len(p.Repairs) > 0 || !p.Changed() {
		t.Errorf("a new Secret is a creation, not a repair: repairs %v, changed %v", p.Repairs, p.Changed())
	}
	got := inspect(t, p.Data)
	if len(got.CAs) != 1 || got.Signer != got.CAs[0] || got.Issuer != got.Signer {
		t.Errorf("want one CA that signs the serving certificate, got %+v", got)
	}
	leaf := leafOf(t, p.Data)
	wantSANs := []string{"psi.system.svc", "psi.system.svc.cluster.local", "webhook.example.com", "127.0.0.1"}
	if diff := cmp.Diff(wantSANs, sans(leaf.DNSNames, leaf.IPAddresses)); diff != "" {
		t.Errorf("SANs (-want +got):\n%s", diff)
	}
	for _, name := range []string{"psi.system.svc", "127.0.0.1"} {
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("serving certificate not valid for %q: %v", name, err)
		}
	}
	if !verifies(p.Data[CACertKey], leaf, t0) {
		t.Error("ca.crt does not verify the serving certificate")
	}
	if diff := cmp.Diff(t0.Add(time.Hour), leaf.NotAfter); diff != "" {
		t.Errorf("serving NotAfter (-want +got):\n%s", diff)
	}
	ca, _ := parseCerts(p.Data[CACertKey])
	if diff := cmp.Diff(t0.Add(3*time.Hour), ca[0].NotAfter); diff != "" {
		t.Errorf("CA NotAfter (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(t0.Add(30*time.Minute), p.Next); diff != "" {
		t.Errorf("next look at the serving certificate's renewal (-want +got):\n%s", diff)
	}
}

// TestPlanTimeline pins the decisions a Secret goes through, starting from one made at t0.
func TestPlanTimeline(t *testing.T) {
	o := testOptions()
	start := mustPlan(t, o, t0, nil, never).Data

	type want struct {
		changed bool
		// caCount is the number of CAs in ca.crt; newSigner and newServing whether they changed from the
		// input's; issuerIsSigner whether the serving certificate comes from the signer.
		caCount               int
		newSigner, newServing bool
		issuerIsSigner        bool
		next                  time.Time
	}
	tests := []struct {
		name      string
		at        time.Time
		data      func(t *testing.T) map[string][]byte
		published func(*x509.Certificate) (time.Time, bool)
		want      want
	}{{
		name: "valid Secret is adopted unchanged",
		at:   t0.Add(time.Minute), data: func(*testing.T) map[string][]byte { return start }, published: publishedAt(t0),
		want: want{caCount: 1, issuerIsSigner: true, next: t0.Add(30 * time.Minute)},
	}, {
		name: "serving certificate is renewed from the same CA once within cert-renew-before",
		at:   t0.Add(30 * time.Minute), data: func(*testing.T) map[string][]byte { return start }, published: publishedAt(t0),
		want: want{changed: true, caCount: 1, newServing: true, issuerIsSigner: true, next: t0.Add(60 * time.Minute)},
	}, {
		name: "CA within ca-renew-before gets a successor published next to it while the serving certificate stays",
		at:   t0.Add(2 * time.Hour), data: func(t *testing.T) map[string][]byte { return renewedAt(t, o, start, t0.Add(100*time.Minute)) }, published: publishedAt(t0),
		want: want{changed: true, caCount: 2, newSigner: true, next: t0.Add(2*time.Hour + 10*time.Minute)},
	}, {
		name: "serving certificate waits while the new CA is not in the caBundle",
		at:   t0.Add(2*time.Hour + 30*time.Minute), data: func(t *testing.T) map[string][]byte { return rotatedAt(t, o, start) }, published: never,
		want: want{caCount: 2, next: t0.Add(2*time.Hour + 40*time.Minute)},
	}, {
		name: "serving certificate waits until the new CA has been published for the propagation delay",
		at:   t0.Add(2*time.Hour + 5*time.Minute), data: func(t *testing.T) map[string][]byte { return rotatedAt(t, o, start) }, published: publishedAt(t0.Add(2*time.Hour + time.Minute)),
		want: want{caCount: 2, next: t0.Add(2*time.Hour + 10*time.Minute)},
	}, {
		name: "serving certificate switches to the new CA after the propagation delay and the old CA stays",
		at:   t0.Add(2*time.Hour + 11*time.Minute), data: func(t *testing.T) map[string][]byte { return rotatedAt(t, o, start) }, published: publishedAt(t0.Add(2*time.Hour + time.Minute)),
		want: want{changed: true, caCount: 2, newServing: true, issuerIsSigner: true, next: t0.Add(2*time.Hour + 21*time.Minute)},
	}, {
		name: "replaced CA leaves the bundle once the switch is a propagation delay old",
		at:   t0.Add(2*time.Hour + 21*time.Minute), data: func(t *testing.T) map[string][]byte { return switchedAt(t, o, start) }, published: publishedAt(t0.Add(2*time.Hour + time.Minute)),
		want: want{changed: true, caCount: 1, issuerIsSigner: true, next: t0.Add(2*time.Hour + 41*time.Minute)},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.data(t)
			p := mustPlan(t, o, tc.at, in, tc.published)
			before, after := inspect(t, in), inspect(t, p.Data)
			got := want{
				changed:        !equalData(in, p.Data),
				caCount:        len(after.CAs),
				newSigner:      after.Signer != before.Signer,
				newServing:     after.Serving != before.Serving,
				issuerIsSigner: after.Issuer == after.Signer,
				next:           p.Next.Truncate(time.Second),
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("plan (-want +got):\n%s\nrotations %v, repairs %v", diff, p.Rotations, p.Repairs)
			}
			if got.changed != p.Changed() {
				t.Errorf("data changed %v but Changed() %v (rotations %v, repairs %v)", got.changed, p.Changed(), p.Rotations, p.Repairs)
			}
			if len(p.Repairs) > 0 {
				t.Errorf("a healthy Secret needs no repairs, got %v", p.Repairs)
			}
			if !verifies(p.Data[CACertKey], leafOf(t, p.Data), tc.at) {
				t.Error("ca.crt does not verify the serving certificate")
			}
			if after.CAs[0] != after.Signer {
				t.Errorf("the signer %s is not first in ca.crt %v", after.Signer, after.CAs)
			}
		})
	}
}

// renewedAt returns start with its serving certificate renewed at at, as the timeline would.
func renewedAt(t *testing.T, o Options, start map[string][]byte, at time.Time) map[string][]byte {
	t.Helper()
	return mustPlan(t, o, at, start, publishedAt(t0)).Data
}

// rotatedAt returns the Secret right after the CA renewal at t0+2h.
func rotatedAt(t *testing.T, o Options, start map[string][]byte) map[string][]byte {
	t.Helper()
	return mustPlan(t, o, t0.Add(2*time.Hour), renewedAt(t, o, start, t0.Add(100*time.Minute)), publishedAt(t0)).Data
}

// switchedAt returns the Secret right after the serving certificate switched to the new CA at t0+2h11m.
func switchedAt(t *testing.T, o Options, start map[string][]byte) map[string][]byte {
	t.Helper()
	return mustPlan(t, o, t0.Add(2*time.Hour+11*time.Minute), rotatedAt(t, o, start), publishedAt(t0.Add(2*time.Hour+time.Minute))).Data
}

// TestPlanRotationIsAlwaysTrusted runs the plan every minute for a day with an API server and replicas that
// each lag one minute behind the Secret, and checks that every certificate served is trusted by every
// caBundle the API server may hold at that moment.
func TestPlanRotationIsAlwaysTrusted(t *testing.T) {
	o := testOptions()
	const lag = time.Minute
	var data map[string][]byte
	// bundles and served hold the Secret's ca.crt and serving leaf as of each step.
	var bundles [][]byte
	var served []*x509.Certificate
	publishedSince := map[string]time.Time{}
	caRotations, servingIssues := 0, 0
	for now := t0; now.Before(t0.Add(24 * time.Hour)); now = now.Add(lag) {
		// The webhook configuration holds the bundle the previous step wrote.
		if len(bundles) > 0 {
			cas, _ := parseCerts(bundles[len(bundles)-1])
			seen := map[string]bool{}
			for _, ca := range cas {
				seen[string(ca.Raw)] = true
				if _, ok := publishedSince[string(ca.Raw)]; !ok {
					publishedSince[string(ca.Raw)] = now
				}
			}
			for k := range publishedSince {
				if !seen[k] {
					delete(publishedSince, k)
				}
			}
		}
		p := mustPlan(t, o, now, data, func(ca *x509.Certificate) (time.Time, bool) {
			at, ok := publishedSince[string(ca.Raw)]
			return at, ok
		})
		if len(p.Repairs) > 0 {
			t.Fatalf("at %s: repairs on a healthy Secret: %v", now.Sub(t0), p.Repairs)
		}
		if data != nil {
			before, after := inspect(t, data), inspect(t, p.Data)
			if before.Signer != after.Signer {
				caRotations++
			}
			if before.Serving != after.Serving {
				servingIssues++
			}
		}
		data = p.Data
		bundles = append(bundles, data[CACertKey])
		served = append(served, leafOf(t, data))

		// The API server may hold this step's bundle or the previous one; a replica may serve this step's
		// certificate or the previous one.
		for _, b := range bundles[max(0, len(bundles)-2):] {
			for _, leaf := range served[max(0, len(served)-2):] {
				if !verifies(b, leaf, now) {
					t.Fatalf("at %s: serving certificate %s not trusted by a caBundle the API server may hold", now.Sub(t0), serial(leaf))
				}
			}
		}
	}
	t.Logf("CA rotations %d, serving certificates issued %d", caRotations, servingIssues)
	if caRotations < 10 || servingIssues < 40 {
		t.Errorf("want at least 10 CA rotations and 40 serving certificates in a day, got %d and %d", caRotations, servingIssues)
	}
}

func TestPlanRepairsCorruptSecret(t *testing.T) {
	o := testOptions()
	start := mustPlan(t, o, t0, nil, never).Data
	first := inspect(t, start)
	at := t0.Add(5 * time.Minute)
	foreignCA, foreignKey, err := newCA(t0, 3*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreignLeaf, foreignLeafKey, err := newServing(t0, time.Hour, foreignCA, foreignKey, []string{"psi.system.svc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	foreignLeafKeyPEM, _ := encodeKey(foreignLeafKey)
	foreignKeyPEM, _ := encodeKey(foreignKey)
	expiredLeaf, expiredKey, err := newServing(t0.Add(-2*time.Hour), time.Hour, mustCA(t, start), mustCAKey(t, start), []string{"psi.system.svc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	expiredKeyPEM, _ := encodeKey(expiredKey)
	otherKey, err := parseKey(foreignKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	otherKeyPEM, _ := encodeKey(otherKey)

	type want struct {
		// Repair is a substring of one of the plan's repairs.
		Repair string
		// SameCA says whether the signer is the original CA; SameServing whether the serving certificate
		// is the original one.
		SameCA, SameServing bool
		CAs                 int
	}
	tests := []struct {
		name string
		data map[string][]byte
		want want
	}{{
		name: "garbage tls.crt is reissued from the existing CA",
		data: withData(start, TLSCertKey, []byte("not a certificate")),
		want: want{Repair: "serving pair is unusable", SameCA: true, CAs: 1},
	}, {
		name: "missing tls.key is reissued from the existing CA",
		data: withData(start, TLSKeyKey, nil),
		want: want{Repair: "tls.crt or tls.key is missing", SameCA: true, CAs: 1},
	}, {
		name: "serving pair with a mismatched key is reissued",
		data: withData(start, TLSKeyKey, foreignLeafKeyPEM),
		want: want{Repair: "serving pair is unusable", SameCA: true, CAs: 1},
	}, {
		name: "expired serving certificate is reissued at once",
		data: withData(withData(start, TLSCertKey, encodeCerts(expiredLeaf)), TLSKeyKey, expiredKeyPEM),
		want: want{Repair: "is valid only from", SameCA: true, CAs: 1},
	}, {
		name: "serving certificate from a CA outside ca.crt is reissued",
		data: withData(withData(start, TLSCertKey, encodeCerts(foreignLeaf)), TLSKeyKey, foreignLeafKeyPEM),
		want: want{Repair: "was issued by no CA in ca.crt", SameCA: true, CAs: 1},
	}, {
		name: "missing ca.key makes a new CA published next to the old one, and the serving certificate stays",
		data: withData(start, CAKeyKey, nil),
		want: want{Repair: "ca.key is missing", SameServing: true, CAs: 2},
	}, {
		name: "garbage ca.key makes a new CA and the serving certificate stays",
		data: withData(start, CAKeyKey, []byte("-----BEGIN PRIVATE KEY-----\nZm9v\n-----END PRIVATE KEY-----\n")),
		want: want{Repair: "ca.key: unparseable", SameServing: true, CAs: 2},
	}, {
		name: "ca.key of another CA makes a new CA and the serving certificate stays",
		data: withData(start, CAKeyKey, otherKeyPEM),
		want: want{Repair: "ca.key belongs to no unexpired CA", SameServing: true, CAs: 2},
	}, {
		name: "missing ca.crt makes a new CA and a new serving certificate",
		data: withData(start, CACertKey, nil),
		want: want{Repair: "ca.key belongs to no unexpired CA", CAs: 1},
	}, {
		name: "junk blocks in ca.crt are dropped",
		data: withData(start, CACertKey, append(slices.Clone(start[CACertKey]), "-----BEGIN CERTIFICATE-----\nZm9v\n-----END CERTIFICATE-----\njunk\n"...)),
		want: want{Repair: "dropping 2 PEM blocks that are not certificates", SameCA: true, SameServing: true, CAs: 1},
	}, {
		name: "a non-CA certificate in ca.crt is dropped",
		data: withData(start, CACertKey, append(slices.Clone(start[CACertKey]), encodeCerts(foreignLeaf)...)),
		want: want{Repair: "which is not a CA", SameCA: true, SameServing: true, CAs: 1},
	}, {
		name: "a duplicate CA in ca.crt is dropped",
		data: withData(start, CACertKey, append(slices.Clone(start[CACertKey]), start[CACertKey]...)),
		want: want{Repair: "a second copy of CA", SameCA: true, SameServing: true, CAs: 1},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPlan(t, o, at, tc.data, publishedAt(t0))
			after := inspect(t, p.Data)
			got := want{
				Repair:      tc.want.Repair,
				SameCA:      after.Signer == first.Signer,
				SameServing: after.Serving == first.Serving,
				CAs:         len(after.CAs),
			}
			if !slices.ContainsFunc(p.Repairs, func(r string) bool { return strings.Contains(r, tc.want.Repair) }) {
				got.Repair = strings.Join(p.Repairs, "; ")
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			if !verifies(p.Data[CACertKey], leafOf(t, p.Data), at) {
				t.Error("repaired ca.crt does not verify the serving certificate")
			}
			again := mustPlan(t, o, at, p.Data, publishedAt(t0))
			if len(again.Repairs) > 0 {
				t.Errorf("repaired Secret still needs repairs: %v", again.Repairs)
			}
		})
	}
}

func TestPlanReissuesForChangedSANs(t *testing.T) {
	o := testOptions()
	start := mustPlan(t, o, t0, nil, never).Data
	o.ExtraSANs = []string{"10.0.0.1"}
	p := mustPlan(t, o, t0.Add(time.Minute), start, never)
	if len(p.Repairs) > 0 {
		t.Errorf("changed flags are a rotation, not a repair: %v", p.Repairs)
	}
	leaf := leafOf(t, p.Data)
	if diff := cmp.Diff([]string{"psi.system.svc", "psi.system.svc.cluster.local", "10.0.0.1"}, sans(leaf.DNSNames, leaf.IPAddresses)); diff != "" {
		t.Errorf("SANs (-want +got):\n%s", diff)
	}
	if got, want := inspect(t, p.Data).Signer, inspect(t, start).Signer; got != want {
		t.Errorf("new SANs need no new CA: signer %s, want %s", got, want)
	}
}

func TestPlanDropsForeignCA(t *testing.T) {
	o := testOptions()
	start := mustPlan(t, o, t0, nil, never).Data
	foreign, _, err := newCA(t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	data := withData(start, CACertKey, append(slices.Clone(start[CACertKey]), encodeCerts(foreign)...))
	if p := mustPlan(t, o, t0.Add(5*time.Minute), data, publishedAt(t0)); len(inspect(t, p.Data).CAs) != 2 {
		t.Errorf("within the propagation delay of the serving certificate every CA stays, got %v", inspect(t, p.Data).CAs)
	}
	p := mustPlan(t, o, t0.Add(15*time.Minute), data, publishedAt(t0))
	if diff := cmp.Diff([]string{inspect(t, start).Signer}, inspect(t, p.Data).CAs); diff != "" {
		t.Errorf("CAs (-want +got):\n%s", diff)
	}
}

func TestNewServingNeverOutlivesItsCA(t *testing.T) {
	ca, key, err := newCA(t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := newServing(t0.Add(30*time.Minute), time.Hour, ca, key, []string{"a.b.svc"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ca.NotAfter, leaf.NotAfter); diff != "" {
		t.Errorf("NotAfter (-want CA's +got):\n%s", diff)
	}
	if diff := cmp.Diff(t0.Add(30*time.Minute), created(leaf)); diff != "" {
		t.Errorf("created (-want +got):\n%s", diff)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || leaf.IsCA {
		t.Errorf("want a server-auth leaf, got EKU %v, IsCA %v", leaf.ExtKeyUsage, leaf.IsCA)
	}
}

func mustCA(t *testing.T, data map[string][]byte) *x509.Certificate {
	t.Helper()
	cas, _ := parseCerts(data[CACertKey])
	return cas[0]
}

func mustCAKey(t *testing.T, data map[string][]byte) crypto.Signer {
	t.Helper()
	k, err := parseKey(data[CAKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	return k
}
