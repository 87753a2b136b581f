-- Registrants by 5-year age band, all disease groups. / 年齢階級別登録者数（全疾患群）
SELECT age_band, COUNT(DISTINCT pid) AS n
FROM jasmin_registrant
WHERE fiscal_year <= {fy}
GROUP BY age_band
