-- Registrants by disease group and 5-year age band. / 疾患群別・年齢階級別登録者数
SELECT disease_group, age_band, COUNT(DISTINCT pid) AS n
FROM jasmin_registrant
WHERE fiscal_year <= {fy}
GROUP BY disease_group, age_band
